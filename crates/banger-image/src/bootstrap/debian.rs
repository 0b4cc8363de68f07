//! Reading what Debian's tools print and write: the concrete kernel package behind the cloud
//! kernel metapackage (`apt-cache depends`, `apt-cache show`), the package list of a root
//! filesystem (`var/lib/dpkg/status`), and `du`'s total.

use banger_api::Package;

/// The package `apt-cache depends <metapackage>` names as a `Depends:` of the form
/// `linux-image-<release>-cloud-amd64`, e.g. `linux-image-6.1.0-28-cloud-amd64`.
pub fn kernel_package_from_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim().trim_start_matches('|');
            l.strip_prefix("Depends:")
        })
        .map(str::trim)
        .find(|p| {
            p.starts_with("linux-image-")
                && p.ends_with("-cloud-amd64")
                && p != &"linux-image-cloud-amd64"
        })
        .map(str::to_owned)
}

/// The `Version:` field of the first stanza `apt-cache show` prints.
pub fn version_from_show(text: &str) -> Option<String> {
    text.lines()
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The file name apt gives a downloaded package: `name_version_arch.deb`, an epoch's `:`
/// written `%3a`.
pub fn deb_file_name(package: &str, version: &str, arch: &str) -> String {
    format!("{package}_{}_{arch}.deb", version.replace(':', "%3a"))
}

/// Installed packages in a dpkg status file, sorted by name.
pub fn installed_packages(status: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for stanza in status.split("\n\n") {
        let mut name = None;
        let mut version = None;
        let mut installed = false;
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package:") {
                name = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("Version:") {
                version = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("Status:") {
                installed = v.split_whitespace().last() == Some("installed");
            }
        }
        if let (Some(name), Some(version), true) = (name, version, installed) {
            out.push(Package { name, version });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The first number `du -s` prints.
pub fn du_total(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_concrete_kernel_package_is_found() {
        let depends = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-28-cloud-amd64\n";
        assert_eq!(
            kernel_package_from_depends(depends).as_deref(),
            Some("linux-image-6.1.0-28-cloud-amd64")
        );
        let alternatives = "linux-image-cloud-amd64\n |Depends: linux-image-6.1.0-27-cloud-amd64\n  \
                            Depends: linux-image-6.1.0-28-cloud-amd64\n";
        assert_eq!(
            kernel_package_from_depends(alternatives).as_deref(),
            Some("linux-image-6.1.0-27-cloud-amd64")
        );
        assert_eq!(
            kernel_package_from_depends("linux-image-cloud-amd64\n"),
            None
        );
        assert_eq!(
            kernel_package_from_depends("  Depends: linux-image-cloud-amd64\n"),
            None
        );
    }

    #[test]
    fn the_candidate_version_is_read() {
        let show = "Package: linux-image-6.1.0-28-cloud-amd64\nSource: linux-signed-amd64 (6.1.119+1)\n\
                    Version: 6.1.119-1\nArchitecture: amd64\n\nPackage: other\nVersion: 9\n";
        assert_eq!(version_from_show(show).as_deref(), Some("6.1.119-1"));
        assert_eq!(version_from_show("Package: x\n"), None);
    }

    #[test]
    fn deb_names_escape_the_epoch() {
        assert_eq!(
            deb_file_name("zlib1g", "1:1.2.13.dfsg-1", "amd64"),
            "zlib1g_1%3a1.2.13.dfsg-1_amd64.deb"
        );
    }

    #[test]
    fn only_installed_packages_are_listed() {
        let status = "Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13\n\n\
                      Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n\
                      Package: bash\nStatus: install ok installed\nPriority: required\nVersion: 5.2.15-2+b7\n\
                      Description: GNU Bourne Again SHell\n multi-line\n";
        let packages = installed_packages(status);
        assert_eq!(
            packages,
            [
                Package {
                    name: "bash".into(),
                    version: "5.2.15-2+b7".into()
                },
                Package {
                    name: "zlib1g".into(),
                    version: "1:1.2.13".into()
                },
            ]
        );
    }

    #[test]
    fn du_output() {
        assert_eq!(du_total("123456\t/x/root\n"), Some(123456));
        assert_eq!(du_total(""), None);
    }
}
