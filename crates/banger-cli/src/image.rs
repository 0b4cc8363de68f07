//! `banger image …`. Registration checks the boot files locally first — a typo in a path
//! should be reported against the path the user typed, not as a failed operation — and sends
//! them as absolute paths, since bangerd runs in another working directory. Bootstrap checks
//! the distribution, suite and name before asking the daemon, which checks them again. Export
//! and import send their file as an absolute path for the same reason; import checks the file
//! and the name first.

use std::path::Path;

use banger_api::validate;
use banger_api::{
    ApiError, BootstrapImageRequest, ExportImageRequest, ExportedImage, Image, ImportImageRequest,
    RegisterImageRequest, Timestamp,
};

use crate::cli::{
    BootstrapArgs, BuildArgs, ExportArgs, ImageCommand, ImportArgs, OutputFormat, PromoteArgs,
    RegisterArgs,
};
use crate::daemon::Daemon;
use crate::exit::Failure;
use crate::operation;
use crate::output;

/// The request of `banger image register`, once the name is valid and every file is a
/// readable regular file.
pub fn register_request(args: &RegisterArgs) -> Result<RegisterImageRequest, ApiError> {
    validate::name("image", &args.name)?;
    Ok(RegisterImageRequest {
        name: args.name.clone(),
        kernel: boot_file("kernel", &args.kernel)?,
        initrd: args
            .initrd
            .as_deref()
            .map(|p| boot_file("initrd", p))
            .transpose()?,
        rootfs: boot_file("rootfs", &args.rootfs)?,
        publish: {
            banger_api::validate::image_ports(&args.publish)?;
            args.publish.clone()
        },
    })
}

/// The request of `banger image bootstrap`, once the distribution, suite and name are valid.
pub fn bootstrap_request(args: &BootstrapArgs) -> Result<BootstrapImageRequest, ApiError> {
    validate::bootstrap_distro(&args.distro)?;
    if let Some(suite) = &args.suite {
        validate::suite(suite)?;
    }
    if let Some(name) = &args.name {
        validate::name("image", name)?;
    }
    Ok(BootstrapImageRequest {
        distro: args.distro.clone(),
        suite: args.suite.clone(),
        name: args.name.clone(),
    })
}

/// The request of `banger image export`: FILE made absolute (it need not exist yet).
pub fn export_request(args: &ExportArgs) -> Result<ExportImageRequest, ApiError> {
    let absolute = std::path::absolute(&args.file)
        .map_err(|e| ApiError::invalid(format!("cannot resolve {}: {e}", args.file.display())))?;
    Ok(ExportImageRequest {
        path: utf8_path("export file", absolute)?,
        force: args.force.then_some(true),
    })
}

/// The request of `banger image import`, once the name is valid and FILE a readable file.
pub fn import_request(args: &ImportArgs) -> Result<ImportImageRequest, ApiError> {
    if let Some(name) = &args.name {
        validate::name("image", name)?;
    }
    Ok(ImportImageRequest {
        path: readable_file(
            "image",
            &args.file,
            "pass the file `banger image export` wrote",
        )?,
        name: args.name.clone(),
    })
}

/// Checks one boot file and returns its absolute, symlink-free path.
fn boot_file(what: &str, path: &Path) -> Result<String, ApiError> {
    readable_file(
        what,
        path,
        &format!("pass --{what} with the path of the {what}"),
    )
}

/// Checks that `path` is a readable regular file and returns its absolute, symlink-free path.
fn readable_file(what: &str, path: &Path, hint: &str) -> Result<String, ApiError> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| {
        let message = if e.kind() == std::io::ErrorKind::NotFound {
            format!("{what} file {shown} does not exist")
        } else {
            format!("cannot read {what} file {shown}: {e}")
        };
        ApiError::invalid(message).with_hint(hint)
    })?;
    if !meta.is_file() {
        return Err(ApiError::invalid(format!(
            "{what} {shown} is not a regular file"
        )));
    }
    std::fs::File::open(path)
        .map_err(|e| ApiError::invalid(format!("cannot read {what} file {shown}: {e}")))?;
    let absolute = std::fs::canonicalize(path)
        .map_err(|e| ApiError::invalid(format!("cannot resolve {what} file {shown}: {e}")))?;
    utf8_path(what, absolute)
}

/// The path as the JSON string the API takes.
fn utf8_path(what: &str, path: std::path::PathBuf) -> Result<String, ApiError> {
    path.into_os_string().into_string().map_err(|raw| {
        ApiError::invalid(format!(
            "{what} path {} is not valid UTF-8",
            Path::new(&raw).display()
        ))
        .with_hint("rename the file or a directory above it")
    })
}

pub async fn run(command: &ImageCommand, format: OutputFormat) -> Result<(), Failure> {
    let text = match command {
        ImageCommand::Register(args) => register(args, format).await?,
        ImageCommand::Bootstrap(args) => bootstrap(args, format).await?,
        ImageCommand::Promote(args) => promote(args, format).await?,
        ImageCommand::Build(args) => build(args, format).await?,
        ImageCommand::Export(args) => export(args, format).await?,
        ImageCommand::Import(args) => import(args, format).await?,
        ImageCommand::List => {
            let daemon = Daemon::locate()?;
            let images = daemon
                .call(async |client| client.list_images().await)
                .await?;
            match format {
                OutputFormat::Json => output::json(&images),
                OutputFormat::Text => output::image_list(&images, Timestamp::now()),
            }
        }
        ImageCommand::Show { name } => {
            let daemon = Daemon::locate()?;
            let image = daemon
                .call(async |client| client.get_image(name).await)
                .await?;
            match format {
                OutputFormat::Json => output::json(&image),
                OutputFormat::Text => output::image_show(&image, Timestamp::now()),
            }
        }
        ImageCommand::Delete { name } => {
            let daemon = Daemon::locate()?;
            daemon
                .call(async |client| client.delete_image(name).await)
                .await?;
            output::deleted("image", name, format)
        }
    };
    output::print(&text);
    Ok(())
}

async fn register(args: &RegisterArgs, format: OutputFormat) -> Result<String, Failure> {
    let request = register_request(args)?;
    let daemon = Daemon::locate()?;
    let started = daemon
        .call(async |client| client.register_image(&request).await)
        .await?;
    let text_mode = format == OutputFormat::Text;
    if text_mode {
        output::eprint(&format!("Registering image {}\n", request.name));
    }
    finish_image(&daemon, started, format, "Registered", None).await
}

/// Follows an operation whose result is an image, then prints the image (`verb` starts the
/// text: "Registered image NAME.").
/// The image a `--replace` may replace: the one holding `name` now, if any.
async fn to_replace(daemon: &Daemon, replace: bool, name: &str) -> Option<Image> {
    if !replace {
        return None;
    }
    daemon
        .client()
        .get_image(name)
        .await
        .ok()
        .filter(|image| image.name == name)
}

async fn finish_image(
    daemon: &Daemon,
    started: banger_api::Operation,
    format: OutputFormat,
    verb: &str,
    replaced: Option<Image>,
) -> Result<String, Failure> {
    let finished =
        operation::follow(daemon.client(), started, format == OutputFormat::Text).await?;
    // The result is the image; asking for it by name covers a daemon that omits it.
    let image = match finished
        .result
        .and_then(|value| serde_json::from_value::<Image>(value).ok())
    {
        Some(image) => image,
        None => daemon.client().get_image(&finished.target).await?,
    };
    // What became of the image it replaced, if it did.
    let replaced = match replaced.filter(|old| old.id != image.id) {
        None => String::new(),
        Some(old) => match daemon.client().get_image(&old.id).await {
            Ok(kept) => format!(
                " It replaces the former {}, kept as {} while VMs or snapshots use it.",
                old.name, kept.name
            ),
            Err(_) => format!(
                " It replaces the former {}, deleted: nothing used it.",
                old.name
            ),
        },
    };
    Ok(match format {
        OutputFormat::Json => output::json(&image),
        OutputFormat::Text => format!(
            "{verb} image {}.{replaced}\n\n{}",
            image.name,
            output::image_show(&image, Timestamp::now())
        ),
    })
}

async fn bootstrap(args: &BootstrapArgs, format: OutputFormat) -> Result<String, Failure> {
    let request = bootstrap_request(args)?;
    let daemon = Daemon::locate()?;
    let started = daemon
        .call(async |client| client.bootstrap_image(&request).await)
        .await?;
    let text_mode = format == OutputFormat::Text;
    if text_mode {
        output::eprint(&format!(
            "Bootstrapping image {} from {} {}\n",
            started.target,
            request.distro,
            request.suite.as_deref().unwrap_or("(default suite)")
        ));
    }
    finish_image(&daemon, started, format, "Bootstrapped", None).await
}

async fn promote(args: &PromoteArgs, format: OutputFormat) -> Result<String, Failure> {
    banger_api::validate::name("image", &args.name)?;
    let request = banger_api::PromoteImageRequest {
        vm: args.vm.clone(),
        name: args.name.clone(),
        with_work: args.with_work.then_some(true),
        replace: args.replace.then_some(true),
    };
    let daemon = Daemon::locate()?;
    let replaced = to_replace(&daemon, args.replace, &args.name).await;
    let started = daemon
        .call(async |client| client.promote_image(&request).await)
        .await?;
    if format == OutputFormat::Text {
        output::eprint(&format!(
            "Promoting VM {} to image {}\n",
            request.vm, started.target
        ));
    }
    finish_image(&daemon, started, format, "Promoted", replaced).await
}

/// The recipe `banger image build` sends: the file or built-in recipe, the flags added,
/// checked, every host path absolute and readable.
pub fn build_recipe(args: &BuildArgs) -> Result<banger_api::Recipe, ApiError> {
    use banger_api::recipe::{RecipeFile, RecipeRun, RecipeService};
    let cwd = std::env::current_dir()
        .map_err(|e| ApiError::invalid(format!("cannot read the current directory: {e}")))?;
    let mut recipe = match (&args.recipe, &args.builtin) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ApiError::invalid(format!("cannot read recipe {}: {e}", path.display()))
            })?;
            let dir = cwd.join(path);
            let dir = dir.parent().unwrap_or(Path::new("/"));
            banger_api::Recipe::from_toml(&text, dir).map_err(|mut e| {
                e.message = format!("{}: {}", path.display(), e.message);
                e
            })?
        }
        (None, Some(name)) => {
            let text = banger_api::recipe::builtin(name)?;
            banger_api::Recipe::from_toml(text, &cwd)?
        }
        (None, None) => banger_api::Recipe::default(),
    };
    if let Some(name) = &args.name {
        recipe.name = Some(name.clone());
    }
    if let Some(base) = &args.base {
        recipe.base = Some(base.clone());
    }
    recipe.packages.extend(args.packages.iter().cloned());
    for copy in &args.copies {
        let (src, dest) = copy.split_once(':').ok_or_else(|| {
            ApiError::invalid(format!("--file {copy:?} is not SRC:DEST"))
                .with_hint("e.g. --file ./motd:/etc/motd")
        })?;
        recipe.files.push(RecipeFile {
            src: std::path::absolute(src)
                .unwrap_or_else(|_| cwd.join(src))
                .display()
                .to_string(),
            dest: dest.to_owned(),
            mode: None,
        });
    }
    for run in &args.runs {
        recipe.run.push(RecipeRun {
            script: Some(
                std::path::absolute(run)
                    .unwrap_or_else(|_| cwd.join(run))
                    .display()
                    .to_string(),
            ),
            command: None,
        });
    }
    for service in &args.services {
        let mut parts = service.splitn(3, ':');
        let (Some(name), Some(port), Some(command)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(ApiError::invalid(format!(
                "--service {service:?} is not NAME:PORT:COMMAND"
            ))
            .with_hint("e.g. --service web:8080:'python3 -m http.server 8080'"));
        };
        let port = port.parse::<u16>().map_err(|_| {
            ApiError::invalid(format!("--service {service:?}: {port:?} is not a port"))
        })?;
        recipe.services.push(RecipeService {
            name: name.to_owned(),
            port,
            command: command.to_owned(),
            timeout: None,
            publish: false,
            http: None,
        });
    }
    recipe.publish.extend(args.publish.iter().copied());
    recipe.nat |= args.nat;
    if let Some(disk) = &args.disk {
        recipe.disk = Some(disk.clone());
    }
    if recipe.name.is_none() {
        return Err(ApiError::invalid("the image has no name")
            .with_hint("pass --name NAME, or set name = \"...\" in the recipe"));
    }
    recipe.check()?;
    let hint = "fix the path (a recipe's relative paths are from its directory)";
    for file in &mut recipe.files {
        file.src = readable_file("copied", Path::new(&file.src), hint)?;
    }
    for run in &mut recipe.run {
        if let Some(script) = &run.script {
            run.script = Some(readable_file("script", Path::new(script), hint)?);
        }
    }
    Ok(recipe)
}

async fn build(args: &BuildArgs, format: OutputFormat) -> Result<String, Failure> {
    let recipe = build_recipe(args)?;
    if args.check {
        return Ok(match format {
            OutputFormat::Json => output::json(&recipe),
            OutputFormat::Text => format!(
                "The recipe is valid; bangerd gets:\n{}",
                serde_json::to_string_pretty(&recipe).unwrap_or_default()
            ),
        });
    }
    let request = banger_api::BuildImageRequest {
        recipe,
        no_cache: args.no_cache.then_some(true),
        download_only: args.download_only.then_some(true),
        replace: args.replace.then_some(true),
    };
    let daemon = Daemon::locate()?;
    let replaced = match &request.recipe.name {
        Some(name) => to_replace(&daemon, args.replace, name).await,
        None => None,
    };
    let started = daemon
        .call(async |client| client.build_image(&request).await)
        .await?;
    if format == OutputFormat::Text {
        output::eprint(&format!(
            "Building image {} on {}\n",
            started.target,
            request
                .recipe
                .base
                .as_deref()
                .unwrap_or("the default image")
        ));
    }
    if args.download_only {
        let finished =
            operation::follow(daemon.client(), started, format == OutputFormat::Text).await?;
        return Ok(match format {
            OutputFormat::Json => output::json(&finished),
            OutputFormat::Text => format!(
                "Downloaded what image {} needs; building the same recipe now needs no network.\n",
                finished.target
            ),
        });
    }
    finish_image(&daemon, started, format, "Built", replaced).await
}

async fn export(args: &ExportArgs, format: OutputFormat) -> Result<String, Failure> {
    let request = export_request(args)?;
    let daemon = Daemon::locate()?;
    let started = daemon
        .call(async |client| client.export_image(&args.name, &request).await)
        .await?;
    let text_mode = format == OutputFormat::Text;
    if text_mode {
        output::eprint(&format!(
            "Exporting image {} to {}\n",
            started.target, request.path
        ));
    }
    let finished = operation::follow(daemon.client(), started, text_mode).await?;
    let exported = finished
        .result
        .and_then(|value| serde_json::from_value::<ExportedImage>(value).ok())
        .ok_or_else(|| ApiError::internal("bangerd did not say what it exported"))?;
    Ok(match format {
        OutputFormat::Json => output::json(&exported),
        OutputFormat::Text => output::exported(&exported),
    })
}

async fn import(args: &ImportArgs, format: OutputFormat) -> Result<String, Failure> {
    let request = import_request(args)?;
    let daemon = Daemon::locate()?;
    let started = daemon
        .call(async |client| client.import_image(&request).await)
        .await?;
    let text_mode = format == OutputFormat::Text;
    if text_mode {
        output::eprint(&format!(
            "Importing image {} from {}\n",
            started.target, request.path
        ));
    }
    let finished = operation::follow(daemon.client(), started, text_mode).await?;
    let image = match finished
        .result
        .and_then(|value| serde_json::from_value::<Image>(value).ok())
    {
        Some(image) => image,
        None => daemon.client().get_image(&finished.target).await?,
    };
    Ok(match format {
        OutputFormat::Json => output::json(&image),
        OutputFormat::Text => format!(
            "Imported image {}.\n\n{}",
            image.name,
            output::image_show(&image, Timestamp::now())
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::exit::Exit;
    use clap::Parser;
    use std::os::unix::fs::PermissionsExt;

    fn request(dir: &Path, args: &[&str]) -> Result<RegisterImageRequest, String> {
        let argv = ["banger", "image", "register"].iter().chain(args);
        let cli = Cli::try_parse_from(argv).unwrap();
        let Command::Image(ImageCommand::Register(args)) = cli.command else {
            panic!("parsed as {cli:?}");
        };
        register_request(&args).map_err(|e| {
            let failure = Failure::from(e);
            assert_eq!(failure.exit, Exit::InvalidInput);
            output::error(&failure.error, OutputFormat::Text)
                .replace(&dir.display().to_string(), "DIR")
        })
    }

    #[test]
    fn files_are_checked_and_sent_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        for f in ["vmlinux", "initrd", "rootfs.ext4"] {
            std::fs::write(base.join(f), b"x").unwrap();
        }
        std::fs::create_dir(base.join("subdir")).unwrap();
        let p = |name: &str| base.join(name).display().to_string();

        let ok = request(
            &base,
            &[
                "--name",
                "debian",
                "--kernel",
                &p("vmlinux"),
                "--initrd",
                &p("initrd"),
                "--rootfs",
                &p("subdir/../rootfs.ext4"),
            ],
        )
        .unwrap();
        assert_eq!(ok.kernel, p("vmlinux"));
        assert_eq!(ok.initrd, Some(p("initrd")));
        assert_eq!(ok.rootfs, p("rootfs.ext4"), "paths are canonical");

        let err = request(
            &base,
            &[
                "--name",
                "debian",
                "--kernel",
                &p("nope"),
                "--rootfs",
                &p("rootfs.ext4"),
            ],
        )
        .unwrap_err();
        insta::assert_snapshot!(err, @r"
        error: kernel file DIR/nope does not exist
        hint: pass --kernel with the path of the kernel
        ");

        let err = request(
            &base,
            &[
                "--name",
                "debian",
                "--kernel",
                &p("vmlinux"),
                "--rootfs",
                &p("subdir"),
            ],
        )
        .unwrap_err();
        insta::assert_snapshot!(err, @"error: rootfs DIR/subdir is not a regular file");

        let err = request(
            &base,
            &[
                "--name",
                "Debian",
                "--kernel",
                &p("vmlinux"),
                "--rootfs",
                &p("rootfs.ext4"),
            ],
        )
        .unwrap_err();
        insta::assert_snapshot!(err, @r#"
        error: image name "Debian" contains 'D' (names are lower-case)
        hint: use 1-63 characters from a-z, 0-9 and '-', starting and ending with a letter or digit
        "#);
    }

    fn bootstrap(args: &[&str]) -> Result<BootstrapImageRequest, String> {
        let argv = ["banger", "image", "bootstrap"].iter().chain(args);
        let cli = Cli::try_parse_from(argv).unwrap();
        let Command::Image(ImageCommand::Bootstrap(args)) = cli.command else {
            panic!("parsed as {cli:?}");
        };
        bootstrap_request(&args).map_err(|e| {
            let failure = Failure::from(e);
            assert_eq!(failure.exit, Exit::InvalidInput);
            output::error(&failure.error, OutputFormat::Text)
        })
    }

    #[test]
    fn bootstrap_inputs_are_checked_before_the_daemon_is_asked() {
        let ok = bootstrap(&["debian"]).unwrap();
        assert_eq!(
            ok,
            BootstrapImageRequest {
                distro: "debian".into(),
                suite: None,
                name: None
            }
        );
        let ok = bootstrap(&["debian", "--suite", "trixie", "--name", "dev-base"]).unwrap();
        assert_eq!(ok.suite.as_deref(), Some("trixie"));
        assert_eq!(ok.name.as_deref(), Some("dev-base"));

        insta::assert_snapshot!(bootstrap(&["ubuntu"]).unwrap_err(), @r#"
        error: cannot bootstrap "ubuntu"
        hint: banger bootstraps debian; adopt another system's boot files with `banger image register`
        "#);
        insta::assert_snapshot!(bootstrap(&["debian", "--suite", "Bookworm"]).unwrap_err(), @r#"
        error: "Bookworm" is not a Debian suite name
        hint: use a codename such as bookworm or trixie
        "#);
        insta::assert_snapshot!(bootstrap(&["debian", "--name", "x-"]).unwrap_err(), @r#"
        error: image name "x-" starts or ends with '-'
        hint: use 1-63 characters from a-z, 0-9 and '-', starting and ending with a letter or digit
        "#);
    }

    #[test]
    fn export_and_import_send_absolute_paths_and_check_what_they_can() {
        let parse = |args: &[&str]| {
            let argv = ["banger", "image"].iter().chain(args);
            Cli::try_parse_from(argv).unwrap().command
        };
        let Command::Image(ImageCommand::Export(args)) =
            parse(&["export", "base", "out/base.banger-image"])
        else {
            panic!("not an export");
        };
        let request = export_request(&args).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            request.path,
            cwd.join("out/base.banger-image").display().to_string()
        );
        assert_eq!(request.force, None);
        let Command::Image(ImageCommand::Export(args)) =
            parse(&["export", "base", "/tmp/x", "--force"])
        else {
            panic!("not an export");
        };
        assert_eq!(export_request(&args).unwrap().force, Some(true));

        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let file = base.join("base.banger-image");
        std::fs::write(&file, b"x").unwrap();
        let import = |args: &[&str]| {
            let Command::Image(ImageCommand::Import(args)) =
                parse(&[&["import"][..], args].concat())
            else {
                panic!("not an import");
            };
            import_request(&args).map_err(|e| {
                output::error(&e, OutputFormat::Text).replace(&base.display().to_string(), "DIR")
            })
        };
        let ok = import(&[file.to_str().unwrap(), "--name", "copy"]).unwrap();
        assert_eq!(ok.path, file.display().to_string());
        assert_eq!(ok.name.as_deref(), Some("copy"));
        let missing = base.join("nope.banger-image");
        insta::assert_snapshot!(import(&[missing.to_str().unwrap()]).unwrap_err(), @r"
        error: image file DIR/nope.banger-image does not exist
        hint: pass the file `banger image export` wrote
        ");
        insta::assert_snapshot!(import(&[file.to_str().unwrap(), "--name", "Copy"]).unwrap_err(), @r#"
        error: image name "Copy" contains 'C' (names are lower-case)
        hint: use 1-63 characters from a-z, 0-9 and '-', starting and ending with a letter or digit
        "#);
    }

    #[test]
    fn unreadable_files_are_refused() {
        // Root reads everything: the check cannot fail there.
        if reads_everything() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinux");
        std::fs::write(&kernel, b"x").unwrap();
        std::fs::set_permissions(&kernel, std::fs::Permissions::from_mode(0o000)).unwrap();
        let err = boot_file("kernel", &kernel).unwrap_err();
        assert!(
            err.message.starts_with("cannot read kernel file"),
            "{err:?}"
        );
    }

    fn reads_everything() -> bool {
        // Without a permission bit, only a privileged reader can open the file.
        let probe = tempfile::NamedTempFile::new().unwrap();
        std::fs::set_permissions(probe.path(), std::fs::Permissions::from_mode(0o000)).unwrap();
        std::fs::File::open(probe.path()).is_ok()
    }
}
