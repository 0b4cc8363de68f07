//! The command line, defined once with clap's derive API: `--help`, the man page
//! (`banger man`) and shell completions (`banger completions`) are all generated from these
//! definitions, so they cannot drift apart.
//!
//! Values a user types are kept raw here (numbers as `i64`, sizes as strings) so that the
//! shared rules in `banger_api::validate` produce the messages, in the CLI and in the daemon
//! alike.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Manage disposable Firecracker microVMs on this workstation.
///
/// banger is a client of bangerd, the daemon that owns banger's state; the first command that
/// needs bangerd starts it, and a running bangerd of another build is restarted.
#[derive(Debug, Parser)]
#[command(
    name = "banger",
    version,
    max_term_width = 100,
    after_help = "Exit codes: 0 ok, 1 internal error, 2 usage, 3 invalid input, 4 not found, \
                  5 conflict, 6 daemon unavailable, 7 operation failed, 8 cancelled, 9 unsupported, \
                  10 host not ready (doctor), 11 over capacity (admission control)."
)]
pub struct Cli {
    /// How to print results: aligned text for people, or the API's JSON for scripts
    #[arg(
        short,
        long,
        global = true,
        value_enum,
        default_value_t = OutputFormat::Text,
        value_name = "FORMAT",
        // After each command's own options, where a reader looks last.
        display_order = 900
    )]
    pub output: OutputFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// The `-o/--output` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Tables and `key: value` blocks
    Text,
    /// The API's JSON, pretty-printed; errors as `{code, message, hint}` on stderr
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, inspect, resize and delete VMs
    #[command(subcommand)]
    Vm(VmCommand),

    /// Bootstrap, register, list, inspect and delete images (kernel, initrd, rootfs)
    #[command(subcommand)]
    Image(ImageCommand),

    /// List, inspect and delete snapshots of VMs
    #[command(subcommand)]
    Snapshot(SnapshotCommand),

    /// Keep VMs of an image ready, restored from a snapshot, for `vm create` to take
    #[command(subcommand)]
    Pool(PoolCommand),

    /// Inspect, start, stop or restart bangerd
    #[command(subcommand)]
    Daemon(DaemonCommand),

    /// Open the terminal UI
    ///
    /// VMs, images and the host's capacity at a glance, with live updates; create and delete
    /// VMs from it. Press ? inside for the keys. Honours NO_COLOR.
    Tui,

    /// Check the host: KVM and its kind, Firecracker, QEMU, networking tools, disk, sudo
    ///
    /// Runs in bangerd, as bangerd's user. Every problem comes with the command or setting
    /// that fixes it. Exits 10 when a check fails.
    Doctor,

    /// Print a one-time URL that signs a browser into the web console
    ///
    /// The URL works once, within 2 minutes. Open it yourself rather than passing it to
    /// another program's command line, where other local users could read it.
    Web,

    /// Print a shell completion script
    #[command(
        after_help = "Example (bash): banger completions bash > ~/.local/share/bash-completion/completions/banger"
    )]
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Print banger's man page (roff)
    #[command(after_help = "Example: banger man | man -l -")]
    Man,
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Create a VM (its disks, network identity and resources) and start it
    #[command(
        after_help = "Example: banger vm create --name dev --vcpus 2 --memory 2048 --work-disk 16G"
    )]
    Create(CreateArgs),

    /// Start a stopped VM
    Start {
        /// VM name
        name: String,
        /// Return once the instance is started instead of waiting for the whole start
        #[arg(long)]
        no_wait: bool,
    },

    /// Stop a VM: ask the guest to shut down, end its VMM after defaults.stop_timeout
    Stop {
        /// VM name
        name: String,
    },

    /// Stop and start a VM
    Restart {
        /// VM name
        name: String,
        /// Return once the instance is started instead of waiting for the whole start
        #[arg(long)]
        no_wait: bool,
    },

    /// Give a stopped VM a fresh root from its image
    ///
    /// Everything written outside /root since the VM was created (installed packages, files
    /// in /etc, /usr, /var, ...) is discarded. The work disk (/root), the VM's name, address,
    /// SSH keys and settings stay. Stop the VM first.
    Reset {
        /// VM name
        name: String,
    },

    /// Pause a running VM (its vCPUs stop; its memory stays allocated)
    Pause {
        /// VM name
        name: String,
    },

    /// Resume a paused VM
    Resume {
        /// VM name
        name: String,
    },

    /// Snapshot a running Firecracker VM: its memory, device state and copies of its disks
    ///
    /// The VM is paused while the snapshot is written and runs on afterwards (a paused VM stays
    /// paused). New VMs start from it with `banger vm create --from-snapshot SNAPSHOT`.
    #[command(after_help = "Example: banger vm snapshot dev --name dev-clean")]
    Snapshot {
        /// VM name
        name: String,
        /// Snapshot name, a DNS label [default: VM-YYYYMMDD-HHMMSS]
        #[arg(long = "name", id = "snapshot_name", value_name = "SNAPSHOT")]
        snapshot: Option<String>,
    },

    /// Clone a running Firecracker VM into a new VM that runs from the same moment
    ///
    /// The clone has the source's memory, processes and disks as they were, and its own
    /// name, address, MAC, SSH host key and agent token. Source and clone share nothing
    /// afterwards.
    #[command(after_help = "Example: banger vm clone dev dev2")]
    Clone {
        /// The VM to clone
        source: String,
        /// The new VM's name, a DNS label
        name: String,
        /// Masquerade the clone's traffic to the host's network
        #[arg(long)]
        nat: bool,
        /// Return once the clone's instance runs instead of waiting for the whole start
        #[arg(long)]
        no_wait: bool,
    },

    /// Open a shell in a VM over SSH (OpenSSH, banger's key, the VM's own host key), or run CMD
    #[command(after_help = "Examples: banger vm ssh dev\n          banger vm ssh dev -- uname -a")]
    Ssh {
        /// VM name
        name: String,
        /// A command to run instead of a shell
        #[arg(last = true, value_name = "CMD")]
        command: Vec<String>,
    },

    /// Run a command in a VM through its guest agent; banger exits with the command's code
    ///
    /// Like `docker exec`: standard input is passed through when it is not a terminal (or with
    /// -i), stdout and stderr stay apart, and Ctrl-C (SIGINT) and SIGTERM reach the command.
    /// With -t the command gets a terminal in the guest (stdout and stderr then merge) that
    /// follows this one's size.
    #[command(
        after_help = "Examples: banger vm exec dev -- uname -r\n          echo hi | banger vm exec dev -- cat\n          banger vm exec -it dev -- bash\n          banger vm exec -e RUST_LOG=debug -w /root/src -u nobody dev -- make"
    )]
    Exec {
        /// VM name
        name: String,
        /// Keep standard input open and pass it through even when it is a terminal
        #[arg(short, long)]
        interactive: bool,
        /// Run the command on a pseudo-terminal in the guest; with -i the local terminal is
        /// put in raw mode, so keys (Ctrl-C too) go to the command
        #[arg(short, long)]
        tty: bool,
        /// Set an environment variable for the command (repeatable)
        #[arg(short, long = "env", value_name = "KEY=VAL", value_parser = parse_env)]
        env: Vec<(String, String)>,
        /// Working directory in the guest [default: the user's home, /root for root]
        #[arg(short, long, value_name = "DIR", visible_alias = "cwd")]
        workdir: Option<String>,
        /// Run as this guest user (a name or a uid) [default: root]
        #[arg(short, long, value_name = "USER")]
        user: Option<String>,
        /// The command and its arguments
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },

    /// Copy files into a VM or out of it, by `docker cp`'s rules (NAME:PATH names the VM's side)
    ///
    /// A file goes to DST when DST does not exist or is a file, and into DST when it is a
    /// directory. A directory becomes DST when DST does not exist, and goes into DST under its
    /// own name when it is a directory; SRC ending in `/.` copies the directory's contents
    /// instead. DST ending in `/` must be an existing directory, and DST's parent must exist.
    /// `-` as SRC extracts a tar stream from standard input into the directory DST; `-` as DST
    /// writes a tar stream of SRC to standard output. Modes are kept; files are owned by root
    /// in the VM and by you on the host unless `-a` keeps the owners they had. A relative path
    /// in a VM starts at /root.
    #[command(after_help = "Examples: banger vm cp ./notes.txt dev:/root/notes.txt
          banger vm cp ./src dev:/root          (gives /root/src)
          banger vm cp ./src/. dev:/srv/app     (the contents of ./src)
          banger vm cp dev:/etc/os-release .
          tar -C dir -c . | banger vm cp - dev:/root/dir")]
    Cp {
        /// What to copy: a local path, NAME:PATH in a VM, or `-` for a tar stream on stdin
        src: String,
        /// Where to: a local path, NAME:PATH in a VM, or `-` for a tar stream on stdout
        dst: String,
        /// Keep the files' owners (numeric uid and gid) instead of giving them to root in the
        /// VM or to you on the host
        #[arg(short, long)]
        archive: bool,
    },

    /// Print a VM's guest console log
    Logs {
        /// VM name
        name: String,
        /// Keep printing what the guest writes (Ctrl-C ends)
        #[arg(short, long)]
        follow: bool,
    },

    /// Ask a VM's guest agent whether it is healthy, and the guest's boot timings
    Health {
        /// VM name
        name: String,
    },

    /// List the sockets listening in a VM
    Ports {
        /// VM name
        name: String,
    },

    /// Publish host ports to a VM's ports: bangerd forwards the host's port to the guest's
    ///
    /// A published port is part of the VM: it is forwarded (TCP) while the VM runs, from its
    /// start until it stops, across daemon restarts. HOSTPORT:GUESTPORT listens on 127.0.0.1,
    /// where only this host can connect. ADDR:HOSTPORT:GUESTPORT listens on ADDR instead, which
    /// exposes the guest's port to every machine that can reach ADDR (0.0.0.0: all of them).
    #[command(subcommand)]
    Port(PortCommand),

    /// Show a VM's memory, load and disk use as the guest sees them
    Stats {
        /// VM name
        name: String,
    },

    /// List VMs
    #[command(visible_alias = "ls")]
    List,

    /// Show one VM
    Show {
        /// VM name
        name: String,
    },

    /// Change the vCPUs, memory or work disk size of a stopped VM
    #[command(after_help = "Example: banger vm set dev --vcpus 4 --work-disk 32G")]
    Set(SetArgs),

    /// Delete a VM and its disks (a running VM is stopped first)
    #[command(visible_alias = "rm")]
    Delete {
        /// VM name
        name: String,
    },
}

/// `banger vm create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Create the VM without starting it
    #[arg(long, conflicts_with = "no_wait")]
    pub no_start: bool,

    /// Return once the instance is started instead of waiting for the whole start
    #[arg(long)]
    pub no_wait: bool,

    /// VM name, a DNS label (a-z, 0-9, '-'); it becomes the guest's hostname [default: generated]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Image name or id [default: the configured default image]
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,

    /// Number of vCPUs, 1 to 32 [default: from config]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub vcpus: Option<i64>,

    /// Guest memory in MiB, at least 128 [default: from config]
    #[arg(long, value_name = "MIB", allow_negative_numbers = true)]
    pub memory: Option<i64>,

    /// Size of the copy-on-write root disk, e.g. 8G; at least 256M [default: from config]
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub disk: Option<String>,

    /// Size of the persistent work disk mounted at /root, e.g. 16G; at least 64M
    /// [default: from config]
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub work_disk: Option<String>,

    /// Masquerade the VM's traffic to the host's network (without it the VM reaches only the
    /// host)
    #[arg(long)]
    pub nat: bool,

    /// Virtual machine monitor to run the VM with [default: from config]
    #[arg(long, value_enum, value_name = "VMM")]
    pub vmm: Option<VmmArg>,

    /// Forward a host port to a guest port while the VM runs (TCP; repeatable).
    /// HOSTPORT:GUESTPORT listens on 127.0.0.1; ADDR:HOSTPORT:GUESTPORT listens on ADDR, which
    /// exposes the guest's port beyond this host
    #[arg(long, short = 'p', value_name = "[ADDR:]HOSTPORT:GUESTPORT")]
    pub publish: Vec<String>,

    /// Restore the VM from a snapshot (name or id) instead of booting it: it runs from the
    /// moment the snapshot was taken, with its own identity, on Firecracker
    #[arg(long, value_name = "SNAPSHOT", conflicts_with_all = ["image", "vcpus", "memory", "disk", "work_disk", "no_start"])]
    pub from_snapshot: Option<String>,
}

/// `banger vm port …`.
#[derive(Debug, Clone, Subcommand)]
pub enum PortCommand {
    /// Publish a host port to a guest port (at once when the VM runs, else from its next start)
    #[command(
        after_help = "Examples: banger vm port add dev 8080:4096       (http://127.0.0.1:8080)\n          banger vm port add dev 0.0.0.0:8080:80  (reachable from other machines)"
    )]
    Add {
        /// VM name
        name: String,
        /// [ADDR:]HOSTPORT:GUESTPORT; ADDR defaults to 127.0.0.1 (this host only)
        #[arg(value_name = "[ADDR:]HOSTPORT:GUESTPORT")]
        spec: String,
    },

    /// Stop publishing a host port
    #[command(visible_alias = "remove")]
    Rm {
        /// VM name
        name: String,
        /// The published host port
        #[arg(value_name = "HOSTPORT", allow_negative_numbers = true)]
        host_port: i64,
    },

    /// List a VM's published ports
    #[command(visible_alias = "ls")]
    List {
        /// VM name
        name: String,
    },
}

/// `banger snapshot ...`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// List snapshots
    List,
    /// Show a snapshot
    Show {
        /// Snapshot name or id
        name: String,
    },
    /// Delete a snapshot and its files (VMs restored from it keep their own copies)
    Delete {
        /// Snapshot name or id
        name: String,
    },
}

/// `banger pool ...`.
#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Keep N ready VMs of IMAGE (Firecracker only; 0 turns its pool off)
    ///
    /// bangerd boots one VM of the image, snapshots it, and keeps N VMs restored from that
    /// snapshot paused. `banger vm create --image IMAGE` without --nat, --publish, --no-start
    /// and with the default sizes then takes one: it runs in milliseconds, with its own name,
    /// address, SSH host key and agent token. Each ready VM holds its memory.
    Set {
        /// Image name
        image: String,
        /// How many ready VMs to keep, 0 to 8
        #[arg(allow_negative_numbers = true)]
        size: i64,
    },
    /// List the images whose pool keeps VMs, with how many are ready
    #[command(visible_alias = "ls")]
    List,
}

/// `--vmm` choices, mirroring `banger_api::VmmKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VmmArg {
    /// Firecracker when it can boot a stock guest kernel here, QEMU otherwise
    Auto,
    /// Firecracker
    Firecracker,
    /// QEMU's microvm machine (KVM when usable)
    Qemu,
}

impl From<VmmArg> for banger_api::VmmKind {
    fn from(vmm: VmmArg) -> Self {
        match vmm {
            VmmArg::Auto => banger_api::VmmKind::Auto,
            VmmArg::Firecracker => banger_api::VmmKind::Firecracker,
            VmmArg::Qemu => banger_api::VmmKind::Qemu,
        }
    }
}

/// `banger vm set`.
#[derive(Debug, Clone, Args)]
pub struct SetArgs {
    /// VM name
    pub name: String,

    /// Number of vCPUs, 1 to 32
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub vcpus: Option<i64>,

    /// Guest memory in MiB, at least 128
    #[arg(long, value_name = "MIB", allow_negative_numbers = true)]
    pub memory: Option<i64>,

    /// New size of the work disk, e.g. 32G; it can only grow
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub work_disk: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build an image from Debian packages: debootstrap, the Debian cloud kernel, banger's initramfs
    ///
    /// The image gets a minimal Debian with OpenSSH, a light init (BusyBox) and the kernel of
    /// the linux-image-cloud-amd64 package as resolved by this host's apt. It needs debootstrap
    /// and root, directly or through passwordless sudo (see `banger doctor`). Downloads (about
    /// 100 MB) are cached under banger's state directory, so the next bootstrap of the same
    /// suite downloads nothing.
    #[command(after_help = "Example: banger image bootstrap debian --suite bookworm --name debian")]
    Bootstrap(BootstrapArgs),

    /// Build a new image from a recipe: packages, files, downloads, scripts and services
    ///
    /// A temporary VM of the base image boots, is provisioned through its guest agent, shuts
    /// down, and its root becomes the new image (its /root becomes the image's work seed).
    /// The host downloads the packages and files the guest gets, so the build needs no
    /// internet in the guest. The temporary VM is deleted whatever happens. A recipe is a TOML
    /// file (docs/images.md); the flags add to it. Builds of the same inputs come from the
    /// cache.
    #[command(
        after_help = "Examples:\n  banger image build --builtin opencode\n  banger image build -f dev.toml\n  banger image build --name tools --package jq --file ./motd:/etc/motd --run ./setup.sh"
    )]
    Build(BuildArgs),

    /// Make a new image of a stopped VM's root: its image with everything the VM changed
    ///
    /// The new image has the VM's packages and files, without what made the VM itself (its
    /// hostname, network, SSH host key, agent token, machine id). Its kernel and initramfs are
    /// the VM's image's. The VM is untouched: its disks are copied first, and it can start
    /// again as soon as the copy is done. Its work disk (/root) becomes the new image's work
    /// seed only with --with-work.
    #[command(after_help = "Example: banger vm stop dev && banger image promote dev dev-tools")]
    Promote(PromoteArgs),

    /// Adopt an existing kernel, optional initrd and ext4 root filesystem as an image
    ///
    /// The files are copied into banger's image store; the originals are left alone.
    #[command(
        after_help = "Example: banger image register --name debian --kernel vmlinux --rootfs rootfs.ext4"
    )]
    Register(RegisterArgs),

    /// Write an image into one file, to import it on another banger host
    ///
    /// The file (a zstd-compressed tar) holds the image's kernel, initrd, root filesystem,
    /// manifest and work seed; a sparse root filesystem's zeros cost next to nothing in it.
    /// bangerd writes it beside FILE under a temporary name and renames it in once complete,
    /// so an interrupted export leaves no partial file. Import it with `banger image import`.
    #[command(after_help = "Example: banger image export debian debian.banger-image")]
    Export(ExportArgs),

    /// Make an image from a file `banger image export` wrote
    ///
    /// The image keeps the exported one's manifest (distribution, kernel version, packages,
    /// services, init features, work seed) and records the file it came from. Its files are
    /// checked like a registration's; a damaged or foreign file is refused and leaves nothing.
    #[command(
        after_help = "Example: banger image import debian.banger-image --name debian-from-laptop"
    )]
    Import(ImportArgs),

    /// List images
    #[command(visible_alias = "ls")]
    List,

    /// Show one image
    Show {
        /// Image name
        name: String,
    },

    /// Delete an image no VM uses
    #[command(visible_alias = "rm")]
    Delete {
        /// Image name
        name: String,
    },
}

/// `banger image bootstrap`.
#[derive(Debug, Clone, Args)]
pub struct BootstrapArgs {
    /// Distribution to bootstrap: debian
    #[arg(value_name = "DISTRO")]
    pub distro: String,

    /// Debian suite (release codename) [default: bookworm]
    #[arg(long, value_name = "SUITE")]
    pub suite: Option<String>,

    /// Image name, a DNS label (a-z, 0-9, '-') [default: the distribution's name]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

/// `banger image build`.
#[derive(Debug, Clone, Args)]
pub struct BuildArgs {
    /// The recipe file (TOML, see docs/images.md); its relative paths are from its directory
    #[arg(
        short = 'f',
        long = "recipe",
        value_name = "RECIPE",
        conflicts_with = "builtin"
    )]
    pub recipe: Option<PathBuf>,

    /// A recipe built into banger: opencode
    #[arg(long, value_name = "NAME")]
    pub builtin: Option<String>,

    /// The new image's name [default: the recipe's]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// The image to build on [default: the recipe's, else the configured default image]
    #[arg(long, value_name = "IMAGE")]
    pub base: Option<String>,

    /// A Debian package to install (repeatable)
    #[arg(long = "package", value_name = "NAME")]
    pub packages: Vec<String>,

    /// A host file copied into the image, SRC:DEST with DEST absolute (repeatable); its mode is kept
    #[arg(long = "file", value_name = "SRC:DEST")]
    pub copies: Vec<String>,

    /// A script run as root in the guest (repeatable, in order)
    #[arg(long = "run", value_name = "FILE")]
    pub runs: Vec<PathBuf>,

    /// A service every VM of the image runs and a start waits for, NAME:PORT:COMMAND (repeatable)
    #[arg(long = "service", value_name = "NAME:PORT:COMMAND")]
    pub services: Vec<String>,

    /// A guest port every VM of the image publishes on the host's loopback (repeatable)
    #[arg(long, value_name = "GUESTPORT")]
    pub publish: Vec<u16>,

    /// Give the build VM NAT, so that scripts may fetch from the internet themselves
    #[arg(long)]
    pub nat: bool,

    /// The build VM's writable root space, e.g. 8G [default: 4G]
    #[arg(long, value_name = "SIZE")]
    pub disk: Option<String>,

    /// Build even when the cache holds an image of the same inputs
    #[arg(long)]
    pub no_cache: bool,

    /// Only download what the build needs (packages, files) into the cache, so that a later
    /// build of the same recipe needs no network
    #[arg(long)]
    pub download_only: bool,

    /// Check the recipe and print it as bangerd will get it, without building
    #[arg(long)]
    pub check: bool,

    /// When an image of the recipe's name exists, the new image takes its name; the old one
    /// is renamed and kept while VMs or snapshots use it, then deleted
    #[arg(long)]
    pub replace: bool,
}

/// `banger image promote`.
#[derive(Debug, Clone, Args)]
pub struct PromoteArgs {
    /// The stopped VM whose root becomes the image
    #[arg(value_name = "VM")]
    pub vm: String,

    /// The new image's name, a DNS label (a-z, 0-9, '-')
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Make the VM's work disk (/root) the new image's work seed, copied into every new VM's
    /// /root (by default the VM's image's seed is kept)
    #[arg(long)]
    pub with_work: bool,

    /// When an image named NAME exists, the new image takes its name; the old one is renamed
    /// and kept while VMs or snapshots use it (the VM itself, perhaps), then deleted
    #[arg(long)]
    pub replace: bool,
}

/// `banger image register`.
#[derive(Debug, Clone, Args)]
pub struct RegisterArgs {
    /// Image name, a DNS label (a-z, 0-9, '-')
    #[arg(long, value_name = "NAME")]
    pub name: String,

    /// Uncompressed ELF kernel (vmlinux)
    #[arg(long, value_name = "FILE")]
    pub kernel: PathBuf,

    /// Initial ramdisk
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,

    /// ext4 filesystem image of the root filesystem
    #[arg(long, value_name = "FILE")]
    pub rootfs: PathBuf,

    /// A guest port every VM of the image publishes on the host's loopback (repeatable): on the
    /// same host port when free, otherwise on the first free one from 49152
    #[arg(long, value_name = "GUESTPORT", allow_negative_numbers = true)]
    pub publish: Vec<i64>,
}

/// `banger image export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Image name
    #[arg(value_name = "NAME")]
    pub name: String,

    /// File to write, e.g. debian.banger-image; its directory must exist
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Replace FILE when it exists
    #[arg(long)]
    pub force: bool,
}

/// `banger image import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// File written by `banger image export`
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Image name, a DNS label (a-z, 0-9, '-') [default: the exported image's name]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Show whether bangerd runs, and its pid, build, uptime and files (does not start it)
    Status,
    /// Start bangerd unless it is running
    Start,
    /// Ask bangerd to exit and wait until it has
    Stop,
    /// Stop bangerd, then start it again
    Restart,
}

/// `KEY=VAL` of `vm exec --env`.
fn parse_env(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{arg:?} is not KEY=VAL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn exec_takes_docker_style_flags() {
        let cli = Cli::try_parse_from([
            "banger", "vm", "exec", "-it", "-e", "A=1", "--env", "B=x=y", "-w", "/tmp", "-u",
            "nobody", "dev", "--", "sh", "-c", "env",
        ])
        .unwrap();
        let Command::Vm(VmCommand::Exec {
            name,
            interactive,
            tty,
            env,
            workdir,
            user,
            command,
        }) = cli.command
        else {
            panic!("parsed as {cli:?}");
        };
        assert_eq!(name, "dev");
        assert!(interactive && tty);
        assert_eq!(env, [("A".into(), "1".into()), ("B".into(), "x=y".into())]);
        assert_eq!(workdir.as_deref(), Some("/tmp"));
        assert_eq!(user.as_deref(), Some("nobody"));
        assert_eq!(command, ["sh", "-c", "env"]);

        let err = Cli::try_parse_from(["banger", "vm", "exec", "-e", "=1", "dev", "--", "true"])
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        // The old spelling still works.
        Cli::try_parse_from(["banger", "vm", "exec", "--cwd", "/", "dev", "--", "pwd"]).unwrap();
    }

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn output_is_global_and_defaults_to_text() {
        let cli = Cli::try_parse_from(["banger", "vm", "list"]).unwrap();
        assert_eq!(cli.output, OutputFormat::Text);
        let cli = Cli::try_parse_from(["banger", "vm", "list", "-o", "json"]).unwrap();
        assert_eq!(cli.output, OutputFormat::Json);
        let cli = Cli::try_parse_from(["banger", "--output", "json", "image", "list"]).unwrap();
        assert_eq!(cli.output, OutputFormat::Json);
    }

    #[test]
    fn negative_numbers_reach_validation() {
        let cli =
            Cli::try_parse_from(["banger", "vm", "create", "--no-start", "--vcpus", "-2"]).unwrap();
        let Command::Vm(VmCommand::Create(args)) = cli.command else {
            panic!("parsed as {cli:?}");
        };
        assert_eq!(args.vcpus, Some(-2));
    }

    #[test]
    fn no_start_and_no_wait_exclude_each_other() {
        let err =
            Cli::try_parse_from(["banger", "vm", "create", "--no-start", "--no-wait"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert_eq!(err.exit_code(), 2);
        let cli = Cli::try_parse_from(["banger", "vm", "create", "--name", "dev"]).unwrap();
        let Command::Vm(VmCommand::Create(args)) = cli.command else {
            panic!("parsed as {cli:?}");
        };
        assert!(!args.no_start && !args.no_wait);
    }

    fn long_help(path: &[&str]) -> String {
        let mut cmd = Cli::command().term_width(100);
        cmd.build();
        let mut cmd = &mut cmd;
        for name in path {
            cmd = cmd.find_subcommand_mut(name).unwrap();
        }
        cmd.render_long_help().to_string()
    }

    #[test]
    fn help_texts() {
        insta::assert_snapshot!("help_banger", long_help(&[]));
        insta::assert_snapshot!("help_vm_create", long_help(&["vm", "create"]));
        insta::assert_snapshot!("help_vm_set", long_help(&["vm", "set"]));
        insta::assert_snapshot!("help_vm_exec", long_help(&["vm", "exec"]));
        insta::assert_snapshot!("help_vm", long_help(&["vm"]));
        insta::assert_snapshot!("help_vm_cp", long_help(&["vm", "cp"]));
        insta::assert_snapshot!("help_vm_reset", long_help(&["vm", "reset"]));
        insta::assert_snapshot!("help_vm_port", long_help(&["vm", "port"]));
        insta::assert_snapshot!("help_vm_port_add", long_help(&["vm", "port", "add"]));
        insta::assert_snapshot!("help_image_register", long_help(&["image", "register"]));
        insta::assert_snapshot!("help_image_bootstrap", long_help(&["image", "bootstrap"]));
        insta::assert_snapshot!("help_image_export", long_help(&["image", "export"]));
        insta::assert_snapshot!("help_image_import", long_help(&["image", "import"]));
        insta::assert_snapshot!("help_daemon", long_help(&["daemon"]));
        insta::assert_snapshot!("help_vm_snapshot", long_help(&["vm", "snapshot"]));
        insta::assert_snapshot!("help_vm_clone", long_help(&["vm", "clone"]));
        insta::assert_snapshot!("help_snapshot", long_help(&["snapshot"]));
    }
}
