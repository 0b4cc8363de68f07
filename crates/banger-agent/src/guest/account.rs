//! The guest's user accounts, as `vm exec --user` needs them: a name or uid resolved through
//! `/etc/passwd`, with the supplementary groups `/etc/group` gives it. Read directly rather
//! than through NSS: banger's images keep their accounts in these files, and the agent is a
//! static binary without a C library's resolver.

use std::path::Path;

/// Who a command runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, the primary one included.
    pub groups: Vec<u32>,
    pub home: String,
    pub shell: String,
}

/// The user cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("no user {0:?} in the guest's /etc/passwd")]
    Unknown(String),

    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Account {
    /// root, without reading anything: the default, and what a guest without `/etc/passwd`
    /// still runs commands as.
    pub fn root() -> Account {
        Account {
            name: "root".into(),
            uid: 0,
            gid: 0,
            groups: vec![0],
            home: "/root".into(),
            shell: "/bin/sh".into(),
        }
    }

    /// Resolves `user` (a name, or a uid) in the files under `etc`.
    pub fn lookup(etc: &Path, user: &str) -> Result<Account, AccountError> {
        let read = |name: &str| {
            let path = etc.join(name);
            std::fs::read_to_string(&path).map_err(|source| AccountError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        let passwd = read("passwd")?;
        let mut account =
            find_user(&passwd, user).ok_or_else(|| AccountError::Unknown(user.to_owned()))?;
        // A missing /etc/group only costs the supplementary groups.
        if let Ok(group) = read("group") {
            account.groups.extend(member_of(&group, &account.name));
        }
        account.groups.sort_unstable();
        account.groups.dedup();
        Ok(account)
    }
}

fn find_user(passwd: &str, user: &str) -> Option<Account> {
    let wanted_uid: Option<u32> = user.parse().ok();
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let [name, _, uid, gid, _, home, shell] = fields[..] else {
            return None;
        };
        let uid: u32 = uid.parse().ok()?;
        (name == user || wanted_uid == Some(uid)).then(|| {
            let gid = gid.parse().ok()?;
            Some(Account {
                name: name.to_owned(),
                uid,
                gid,
                groups: vec![gid],
                home: home.to_owned(),
                shell: if shell.is_empty() { "/bin/sh" } else { shell }.to_owned(),
            })
        })?
    })
}

fn member_of<'a>(group: &'a str, user: &'a str) -> impl Iterator<Item = u32> + 'a {
    group.lines().filter_map(move |line| {
        let fields: Vec<&str> = line.split(':').collect();
        let [_, _, gid, members] = fields[..] else {
            return None;
        };
        members
            .split(',')
            .any(|m| m == user)
            .then(|| gid.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
        broken line\n\
        dev:x:1000:1000::/home/dev:\n";
    const GROUP: &str = "root:x:0:\nsudo:x:27:dev,other\nusers:x:100:dev\nnogroup:x:65534:\n";

    #[test]
    fn users_resolve_by_name_or_uid_with_their_groups() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("passwd"), PASSWD).unwrap();
        std::fs::write(dir.path().join("group"), GROUP).unwrap();
        let dev = Account::lookup(dir.path(), "dev").unwrap();
        assert_eq!((dev.uid, dev.gid), (1000, 1000));
        assert_eq!(dev.groups, [27, 100, 1000]);
        assert_eq!(
            (dev.home.as_str(), dev.shell.as_str()),
            ("/home/dev", "/bin/sh")
        );

        let nobody = Account::lookup(dir.path(), "65534").unwrap();
        assert_eq!(nobody.name, "nobody");
        assert_eq!(nobody.groups, [65534]);

        let err = Account::lookup(dir.path(), "mallory").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no user \"mallory\" in the guest's /etc/passwd"
        );
    }
}
