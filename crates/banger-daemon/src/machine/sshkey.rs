//! ed25519 SSH key pairs made in-process, in the files OpenSSH reads: the private key in
//! OpenSSH's own format (`-----BEGIN OPENSSH PRIVATE KEY-----`, unencrypted) and the public
//! key as one `ssh-ed25519 AAAA... comment` line, both encoded by the `ssh-key` crate.
//! Making one costs microseconds where running `ssh-keygen` costs 10–30 ms, which matters on
//! every `vm create`.

use ssh_key::private::{Ed25519Keypair, KeypairData};
use ssh_key::{LineEnding, PrivateKey};

/// A key pair, as the two files' contents.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// The private key file, ending in a newline.
    pub private_key: String,
    /// `ssh-ed25519 AAAA... comment`, without a newline.
    pub public_key: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

/// A new random ed25519 key pair with `comment`.
pub fn generate(comment: &str) -> KeyPair {
    from_seed(&rand::random::<[u8; 32]>(), comment)
}

/// The key pair of a 32-byte secret seed.
fn from_seed(seed: &[u8; 32], comment: &str) -> KeyPair {
    let keypair = KeypairData::Ed25519(Ed25519Keypair::from_seed(seed));
    // Encoding an unencrypted ed25519 key into memory has no way to fail.
    let key = PrivateKey::new(keypair, comment).expect("an ed25519 key pair is valid");
    let private_key = key
        .to_openssh(LineEnding::LF)
        .expect("an ed25519 key encodes")
        .to_string();
    let public_key = key
        .public_key()
        .to_openssh()
        .expect("an ed25519 public key encodes");
    KeyPair {
        private_key,
        public_key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_host::{CommandRunner, CommandSpec, RealRunner, RunError};
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use std::os::unix::fs::OpenOptionsExt;

    #[test]
    fn known_answer() {
        // RFC 8032's first test vector: this secret has this public key.
        let seed: [u8; 32] = [
            0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec,
            0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03,
            0x1c, 0xae, 0x7f, 0x60,
        ];
        let pair = from_seed(&seed, "root@dev");
        let public = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
        let blob = STANDARD
            .decode(pair.public_key.split(' ').nth(1).unwrap())
            .unwrap();
        assert_eq!(&blob[..15], b"\0\0\0\x0bssh-ed25519");
        let hex: String = blob[19..].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, public);
        assert!(pair.public_key.ends_with(" root@dev"));
        assert!(pair.private_key.lines().all(|l| l.len() <= 70));
        assert!(!format!("{pair:?}").contains("PRIVATE"), "{pair:?}");
    }

    /// OpenSSH itself reads the private key and derives the same public key from it.
    #[test]
    fn ssh_keygen_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        for comment in ["root@dev", "", "a longer comment, to move the padding"] {
            let pair = generate(comment);
            let path = dir.path().join("key");
            let _ = std::fs::remove_file(&path);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, pair.private_key.as_bytes()))
                .unwrap();
            let derived = RealRunner.run(
                &CommandSpec::new("ssh-keygen")
                    .args(["-y", "-f"])
                    .arg(path.to_string_lossy()),
            );
            let derived = match derived {
                Ok(out) => out.stdout_lossy(),
                Err(RunError::NotFound { .. }) => {
                    banger_test_support::skip!("ssh-keygen (openssh-client) is not installed");
                    return;
                }
                Err(e) => panic!("ssh-keygen cannot read the key: {e}"),
            };
            assert_eq!(derived.trim(), pair.public_key, "comment {comment:?}");
        }
        assert_ne!(generate("x"), generate("x"), "each key is new");
    }
}
