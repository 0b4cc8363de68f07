//! `PUT /boot-source`: the kernel, the initrd and the kernel command line, Firecracker's
//! `BootSource`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Firecracker's `BootSource`. Without `boot_args` Firecracker uses its own default command
/// line; banger always sends one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSource {
    pub kernel_image_path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
}
