//! What the TUI shows and does, without a terminal: states are built by feeding the app the
//! messages the real loop would, frames are rendered into ratatui's `TestBackend` and compared
//! as text snapshots (a change in what users see is a reviewed change), and colours are
//! checked on the cells that carry them.
//!
//! They stay in one file because they test one screen's state machine with one set of helpers (the
//! fixed data, `loaded`, `press`, the frame renderer) that every test uses.

use std::time::Duration;

use banger_agent_protocol::protocol::{BootStage, Health};
use banger_api::validate::{GIB, MIB};
use banger_api::{
    ApiError, Capacity, CpuCapacity, DaemonInfo, DiskCapacity, ErrorCode, Image, ImageSource,
    MemoryCapacity, Operation, OperationKind, OperationState, Progress, PromoteImageRequest,
    ServiceCheck, Snapshot, Stage as OpStage, StageState as OpStageState, Timestamp, Vm, VmRuntime,
    VmState, VmmKind,
};
use banger_api::{ConsoleChunk, SshAccess};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::{Color, Modifier};

use super::app::{Acted, Action, App, Effect, Msg, Overlay, SshEnded, Stage, StageState, View};
use super::form::{CreateForm, Field, Outcome, field_of};
use super::theme::Theme;
use super::ui;
use crate::guest::SshSession;
use crate::output::tests::{NOW, image, vm};
use banger_test_support::fixtures;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn ago(secs: i64) -> Timestamp {
    Timestamp(NOW.0 - secs * 1000)
}

fn info() -> DaemonInfo {
    // From JSON so that fields added to the daemon's description later keep their defaults.
    serde_json::from_value(serde_json::json!({
        "version": "0.1.0",
        "build_id": "0.1.0-test",
        "pid": 4242,
        "socket": "/run/user/1000/banger/bangerd.sock",
        "state_dir": "/home/u/.local/state/banger",
        "log_file": "/home/u/.local/state/banger/bangerd.log",
        "started_at": "2025-11-23T11:00:00Z",
        "uptime_secs": 4400
    }))
    .unwrap()
}

fn capacity(cpu: (u32, u32), ram_gib: (u64, u64), disk_gib: (u64, u64)) -> Capacity {
    Capacity {
        cpu: CpuCapacity {
            reserved_vcpus: cpu.0,
            host_cpus: cpu.1,
            vcpu_limit: None,
        },
        memory: MemoryCapacity {
            reserved_bytes: ram_gib.0 * GIB,
            host_bytes: ram_gib.1 * GIB,
            available_bytes: ram_gib.1 * GIB / 2,
            limit_bytes: None,
        },
        disk: DiskCapacity {
            path: "/home/u/.local/state/banger".into(),
            vm_allocated_bytes: disk_gib.0 * GIB,
            fs_total_bytes: disk_gib.1 * GIB,
            fs_available_bytes: disk_gib.1 * GIB / 2,
            image_allocated_bytes: GIB,
            snapshot_allocated_bytes: 0,
        },
        vms_total: 3,
        vms_running: 1,
    }
}

/// What bangerd records while a VM's VMM runs, started `secs` ago.
fn runtime(vm: &Vm, secs: i64) -> VmRuntime {
    VmRuntime {
        vmm: VmmKind::Firecracker,
        pid: 4242,
        api_socket: format!("/run/user/1000/banger/vms/{}.api", vm.id),
        vsock_socket: Some(format!("/run/user/1000/banger/vms/{}.vsock", vm.id)),
        tap: "bt-0123456789ab".into(),
        started_at: ago(secs),
        boot: Vec::new(),
        jail: None,
        qemu: None,
    }
}

/// A VM whose VMM died, with the reason and the console's last lines as bangerd records them.
fn failed(name: &str) -> Vm {
    let mut vm = vm(name, "172.30.0.254", VmState::Failed);
    vm.last_error = Some(
        "its VMM (pid 4242) was killed or crashed; last console lines:\n    \
         [    3.101] VFS: Cannot open root device \"vda\" or unknown-block(0,0): error -6\n    \
         [    3.102] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"
            .into(),
    );
    vm
}

fn vms() -> Vec<Vm> {
    let mut web = vm("web-1", "172.30.0.3", VmState::Running);
    web.vcpus = 4;
    web.memory_mib = 4096;
    web.nat = true;
    // Up for 1 h 2 min, while its record last changed 42 s ago: uptime comes from the runtime.
    web.runtime = Some(runtime(&web, 3_720));
    let long = failed("a-very-long-vm-name-that-uses-most-of-the-sixty-three-chars");
    vec![vm("dev", "172.30.0.2", VmState::Stopped), web, long]
}

fn images() -> Vec<Image> {
    let mut built = image("builder", ago(3 * 86_400));
    built.source = ImageSource::Bootstrapped;
    built.manifest.distro = Some("debian".into());
    built.manifest.suite = Some("bookworm".into());
    built.manifest.packages = ["openssh-server", "systemd", "ca-certificates", "curl"]
        .iter()
        .map(|name| fixtures::package(name, "1"))
        .collect();
    built.manifest.services = vec![
        fixtures::service("ssh", 22),
        fixtures::service("opencode", 4096),
    ];
    vec![built, image("debian", ago(180))]
}

/// The app as the real loop leaves it after a clean start with a running daemon.
fn loaded(theme: Theme, vms: Vec<Vm>, images: Vec<Image>, capacity: Capacity) -> App {
    let mut app = App::new(theme, NOW);
    let at = |app: &mut App, clock: u64, msg: Msg| {
        app.set_clock(ms(clock), NOW);
        app.update(msg)
    };
    at(&mut app, 1, Msg::StageStarted(Stage::FindDaemon));
    at(&mut app, 4, Msg::StageDone(Stage::FindDaemon, ms(3)));
    at(&mut app, 4, Msg::DaemonReady(info()));
    at(&mut app, 9, Msg::Vms(Ok(vms), ms(5)));
    at(&mut app, 11, Msg::Capacity(Ok(capacity), ms(7)));
    at(&mut app, 16, Msg::Images(Ok(images), ms(12)));
    at(&mut app, 16, Msg::Snapshots(Ok(Vec::new())));
    at(&mut app, 16, Msg::Operations(Ok(Vec::new())));
    app
}

fn usual() -> App {
    usual_with(vms(), images())
}

/// The app of [`usual`] with these VMs and images instead.
fn usual_with(vms: Vec<Vm>, images: Vec<Image>) -> App {
    loaded(
        Theme::colored(),
        vms,
        images,
        capacity((4, 16), (8, 32), (120, 460)),
    )
}

fn key(code: KeyCode) -> Msg {
    Msg::Key(super::plain_key(code))
}

fn press(app: &mut App, keys: &str) -> Vec<Effect> {
    keys.chars()
        .flat_map(|c| app.update(key(KeyCode::Char(c))))
        .collect()
}

fn render(app: &App, width: u16, height: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| ui::draw(frame, app)).unwrap();
    terminal.backend().buffer().clone()
}

/// The frame as text, one quoted line per row (trailing blanks stay visible).
fn screen(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| ui::draw(frame, app)).unwrap();
    terminal.backend().to_string()
}

fn row_text(buffer: &Buffer, y: u16) -> String {
    (0..buffer.area.width)
        .map(|x| buffer[(x, y)].symbol())
        .collect()
}

fn contains(app: &App, width: u16, height: u16, text: &str) -> bool {
    let buffer = render(app, width, height);
    (0..height).any(|y| row_text(&buffer, y).contains(text))
}

// ---- startup ------------------------------------------------------------------------------

#[test]
fn the_first_frame_needs_nothing_but_the_app() {
    let mut app = App::new(Theme::colored(), NOW);
    assert_eq!(app.start(), vec![Effect::Bootstrap]);
    insta::assert_snapshot!("loading_first_frame", screen(&app, 100, 30));
}

#[test]
fn startup_stages_show_their_timings_while_they_run() {
    let mut app = App::new(Theme::colored(), NOW);
    app.set_clock(ms(1), NOW);
    app.update(Msg::StageStarted(Stage::FindDaemon));
    app.set_clock(ms(4), NOW);
    app.update(Msg::StageDone(Stage::FindDaemon, ms(3)));
    app.update(Msg::StageStarted(Stage::StartDaemon));
    app.set_clock(ms(436), NOW);
    app.update(Msg::Tick);
    insta::assert_snapshot!("loading_daemon_starting", screen(&app, 100, 12));
    assert_eq!(app.tick_interval(), ms(100), "a running timer ticks often");
}

#[test]
fn vms_appear_before_images_finish_loading() {
    let mut app = App::new(Theme::colored(), NOW);
    app.update(Msg::StageDone(Stage::FindDaemon, ms(3)));
    let effects = app.update(Msg::DaemonReady(info()));
    assert_eq!(
        effects,
        vec![
            Effect::LoadVms,
            Effect::LoadCapacity,
            Effect::LoadOperations,
            Effect::LoadImages,
            Effect::LoadSnapshots
        ]
    );
    app.set_clock(ms(9), NOW);
    app.update(Msg::Vms(Ok(vms()), ms(5)));
    let stages: Vec<(Stage, StageState)> = app.startup.iter().map(|s| (s.stage, s.state)).collect();
    assert_eq!(
        stages,
        vec![
            (Stage::FindDaemon, StageState::Done(ms(3))),
            (Stage::LoadVms, StageState::Done(ms(5))),
            (Stage::LoadImages, StageState::Running { since: ms(0) }),
            (Stage::LoadCapacity, StageState::Running { since: ms(0) }),
        ]
    );
    insta::assert_snapshot!("loading_vms_before_images", screen(&app, 100, 16));
}

#[test]
fn the_status_line_keeps_every_startup_timing() {
    let app = usual();
    insta::assert_snapshot!(
        row_text(&render(&app, 100, 30), 29).trim_end(),
        @" find daemon 3ms · load VMs 5ms · load images 12ms · load capacity 7ms"
    );
}

#[test]
fn an_unreachable_daemon_is_explained_in_place_of_the_lists() {
    let mut app = App::new(Theme::colored(), NOW);
    app.update(Msg::StageDone(Stage::FindDaemon, ms(2)));
    app.update(Msg::StageStarted(Stage::StartDaemon));
    let error = ApiError::new(
        ErrorCode::Unavailable,
        "bangerd (pid 977) exited while starting; its startup log /run/user/1000/banger/bangerd.startup.log is empty",
    )
    .with_hint("bangerd's log is /home/u/.local/state/banger/bangerd.log");
    app.update(Msg::BootstrapFailed(Stage::StartDaemon, ms(812), error));
    insta::assert_snapshot!("error_daemon_unreachable", screen(&app, 100, 16));
    // `r` tries again from the start, once.
    assert_eq!(press(&mut app, "r"), vec![Effect::Bootstrap]);
    assert_eq!(app.startup.len(), 1);
    assert!(
        press(&mut app, "r").is_empty(),
        "a bootstrap is already running"
    );
}

#[test]
fn a_failed_refresh_keeps_what_was_loaded_and_says_so() {
    let mut app = usual();
    app.set_clock(ms(2_100), NOW);
    let effects = app.update(Msg::Tick);
    assert!(effects.contains(&Effect::LoadVms));
    let error = ApiError::new(
        ErrorCode::Unavailable,
        "cannot reach bangerd at /run/user/1000/banger/bangerd.sock: Connection refused (os error 111)",
    );
    app.update(Msg::Vms(Err(error), ms(1)));
    assert_eq!(app.vms.ready().map(Vec::len), Some(3), "the list stays");
    insta::assert_snapshot!(
        row_text(&render(&app, 120, 30), 29).trim_end(),
        @" ✗ not refreshed (r retries): cannot reach bangerd at /run/user/1000/banger/bangerd.sock: Connection refused (os error"
    );
    assert_eq!(press(&mut app, "r"), vec![Effect::Bootstrap]);
}

// ---- capacity bars ------------------------------------------------------------------------

/// Every bar at exactly `percent`.
fn bars_at(theme: Theme, percent: u64) -> App {
    let mut c = capacity((percent as u32, 100), (0, 32), (0, 500));
    // Rounded up: 70 % of 32 GiB is not a whole number of bytes, and 69.99 % reads "69%".
    c.memory.reserved_bytes = (c.memory.host_bytes * percent).div_ceil(100);
    c.disk.vm_allocated_bytes = (c.disk.fs_total_bytes * percent).div_ceil(100);
    loaded(theme, vms(), images(), c)
}

/// The usual VMs and images on a host of `capacity`.
fn on_host(capacity: Capacity) -> App {
    loaded(Theme::colored(), vms(), images(), capacity)
}

/// The capacity row of `app` as one line of a table, after `label`.
fn bars_row(label: &str, app: &App) -> String {
    format!("{label:<5} |{}|\n", row_text(&render(app, 100, 30), 1))
}

#[test]
fn bars_at_0_50_90_100_percent_and_unknown_totals() {
    let mut rows = String::new();
    for percent in [0, 50, 70, 90, 100] {
        let app = bars_at(Theme::colored(), percent);
        rows.push_str(&bars_row(&format!("{percent:>3}%"), &app));
    }
    let zero = on_host(capacity((3, 0), (0, 0), (0, 0)));
    rows.push_str(&bars_row(" n/a", &zero));
    let over = on_host(capacity((24, 16), (40, 32), (10, 460)));
    rows.push_str(&bars_row("over", &over));
    // Admission control on (the default): CPU and RAM against its limits, 4 vCPUs per CPU and
    // the host's memory less 1G.
    let mut limited = capacity((6, 16), (8, 32), (120, 460));
    limited.cpu.vcpu_limit = Some(64);
    limited.memory.limit_bytes = Some(31 * GIB);
    rows.push_str(&bars_row("limit", &on_host(limited)));
    insta::assert_snapshot!("bars_levels", rows);
}

/// The colour of the first filled cell of the bar labelled `label` on the capacity row.
fn bar_color(buffer: &Buffer, label: &str) -> Color {
    let row = row_text(buffer, 1);
    let start = row.find(label).expect(label);
    let column = row[..start].chars().count() as u16;
    (column..buffer.area.width)
        .map(|x| &buffer[(x, 1)])
        .find(|cell| "█▉▊▋▌▍▎▏".contains(cell.symbol()) && cell.symbol() != "▏")
        .map(|cell| cell.fg)
        .unwrap()
}

#[test]
fn bar_colours_change_at_the_thresholds() {
    let expect = [
        (20, Color::Green),
        (50, Color::Green),
        (69, Color::Green),
        (70, Color::Yellow),
        (89, Color::Yellow),
        (90, Color::Red),
        (100, Color::Red),
    ];
    for (percent, color) in expect {
        let buffer = render(&bars_at(Theme::colored(), percent), 100, 30);
        for label in ["CPU", "RAM", "Disk"] {
            assert_eq!(bar_color(&buffer, label), color, "{label} at {percent}%");
        }
    }
    // The figures follow the bar's level: bold from 70 %.
    let buffer = render(&bars_at(Theme::colored(), 95), 100, 30);
    let row = row_text(&buffer, 1);
    let at = row.find("95/100 vCPU").unwrap();
    let cell = &buffer[(row[..at].chars().count() as u16, 1)];
    assert_eq!(cell.fg, Color::Red);
    assert!(cell.modifier.contains(Modifier::BOLD));
}

#[test]
fn no_color_means_no_colour_anywhere_and_symbols_instead() {
    for percent in [0, 75, 95] {
        let mut app = bars_at(Theme::plain(), percent);
        for overlay in [
            None,
            Some(Overlay::Help),
            Some(Overlay::Create(Box::default())),
            Some(Overlay::Confirm("web-1".into(), Action::Stop)),
            Some(Overlay::Confirm("web-1".into(), Action::Delete)),
        ] {
            app.overlay = overlay;
            let buffer = render(&app, 100, 30);
            for cell in buffer.content() {
                assert_eq!(cell.fg, Color::Reset, "{percent}%: {:?}", cell.symbol());
                assert_eq!(cell.bg, Color::Reset, "{percent}%: {:?}", cell.symbol());
            }
        }
    }
    let row = |percent| row_text(&render(&bars_at(Theme::plain(), percent), 100, 30), 1);
    assert!(!row(50).contains('!'), "{}", row(50));
    assert!(row(75).contains("75% !"), "{}", row(75));
    assert!(row(95).contains("95% !!"), "{}", row(95));
    insta::assert_snapshot!(
        "bars_no_color",
        format!("{}\n{}\n{}", row(50), row(75), row(95))
    );
    // Levels still stand out: bold figures.
    let buffer = render(&bars_at(Theme::plain(), 95), 100, 30);
    let text = row_text(&buffer, 1);
    let at = text.find("95% !!").unwrap();
    assert!(
        buffer[(text[..at].chars().count() as u16, 1)]
            .modifier
            .contains(Modifier::BOLD)
    );
}

#[test]
fn no_color_counts_when_it_is_not_empty() {
    let theme = |value: Option<&str>| Theme::for_no_color(value.map(std::ffi::OsStr::new));
    assert_eq!(theme(None), Theme::colored());
    assert_eq!(theme(Some("")), Theme::colored());
    assert_eq!(theme(Some("1")), Theme::plain());
    assert_eq!(theme(Some("yes")), Theme::plain());
}

// ---- lists and details --------------------------------------------------------------------

#[test]
fn vm_list_with_details() {
    let mut app = usual();
    insta::assert_snapshot!("vms_list_100x30", screen(&app, 100, 30));
    press(&mut app, "j");
    insta::assert_snapshot!("vms_list_80x24_second_selected", screen(&app, 80, 24));
}

#[test]
fn uptime_is_shown_only_for_vms_that_run() {
    let app = usual();
    let buffer = render(&app, 100, 30);
    // The row of each VM, which ends with its uptime.
    let row = |name: &str| {
        (4..7)
            .map(|y| row_text(&buffer, y))
            .find(|row| row.contains(name))
            .unwrap()
            .trim_matches(['│', ' '])
            .to_owned()
    };
    assert!(row("dev").ends_with("  -"), "{}", row("dev"));
    assert!(
        row("web-1").ends_with("  1h 2m"),
        "from the runtime's start, not the record's last change: {}",
        row("web-1")
    );
    assert!(
        row("a-very-long").ends_with("  -"),
        "a failed VM holds nothing"
    );
}

#[test]
fn empty_lists_say_how_to_fill_them() {
    let mut app = loaded(
        Theme::colored(),
        vec![],
        vec![],
        capacity((0, 16), (0, 32), (0, 460)),
    );
    insta::assert_snapshot!("vms_empty", screen(&app, 80, 12));
    press(&mut app, "2");
    assert_eq!(app.view, View::Images);
    insta::assert_snapshot!("images_empty", screen(&app, 80, 12));
    // Nothing to select or delete.
    assert!(press(&mut app, "1jjdkG").is_empty());
    assert_eq!(app.overlay, None);
}

#[test]
fn image_list_with_manifest() {
    let mut app = usual();
    press(&mut app, "2");
    insta::assert_snapshot!("images_list_100x30", screen(&app, 100, 30));
}

#[test]
fn a_retired_image_says_so_and_what_replaced_it() {
    let mut images = images();
    let mut retired = images[0].clone();
    retired.id = "img-retired".into();
    retired.name = "builder-3f9a1c2b".into();
    retired.retired = Some(Box::new(banger_api::RetiredImage {
        name: "builder".into(),
        replaced_by: Some(banger_api::ImageRef {
            id: images[0].id.clone(),
            name: "builder".into(),
        }),
        at: ago(120),
    }));
    images.insert(1, retired);
    let mut app = usual_with(vms(), images);
    press(&mut app, "2j");
    let screen = screen(&app, 120, 30);
    assert!(screen.contains("builder-3f9a1c2b"), "{screen}");
    assert!(screen.contains(" retired "), "the list says it: {screen}");
    assert!(
        screen.contains("was builder, replaced by builder"),
        "the detail says what replaced it: {screen}"
    );
}

#[test]
fn operations_in_progress_show_their_current_stage() {
    let mut app = usual();
    let stage = |name: &str, state| OpStage {
        name: name.into(),
        state,
        started_at: None,
        ended_at: None,
        message: None,
        progress: None,
    };
    let mut copy = stage("copy files", OpStageState::Running);
    copy.progress = Some(Progress {
        done: 900 * MIB,
        total: 2 * GIB,
        unit: "bytes".into(),
    });
    let op = Operation {
        id: "op-1".into(),
        kind: OperationKind::RegisterImage,
        target: "big".into(),
        state: OperationState::Running,
        stages: vec![
            stage("check files", OpStageState::Done),
            copy,
            stage("write manifest", OpStageState::Pending),
        ],
        error: None,
        result: None,
        cancel_requested: false,
        created_at: ago(3),
        ended_at: None,
        version: 7,
    };
    app.update(Msg::Operations(Ok(vec![op.clone()])));
    assert_eq!(app.poll_interval(), ms(500), "polls faster while work runs");
    insta::assert_snapshot!("operations_running_80x24", screen(&app, 80, 24));

    // When it ends: a notice, and the images (and VMs, capacity) are read again.
    app.set_clock(ms(3_000), NOW);
    let done = Operation {
        state: OperationState::Succeeded,
        ..op
    };
    let effects = app.update(Msg::Operations(Ok(vec![done])));
    assert!(effects.contains(&Effect::LoadImages), "{effects:?}");
    assert_eq!(app.poll_interval(), ms(2_000));
    assert!(contains(&app, 80, 24, "✓ register image big succeeded."));
}

#[test]
fn an_operation_too_quick_to_be_seen_running_still_reloads_images() {
    let mut app = usual();
    let op = |id: &str| Operation {
        id: id.into(),
        kind: OperationKind::RegisterImage,
        target: "x".into(),
        state: OperationState::Succeeded,
        stages: vec![],
        error: None,
        result: None,
        cancel_requested: false,
        created_at: ago(3),
        ended_at: Some(ago(2)),
        version: 3,
    };
    assert!(
        app.update(Msg::Operations(Ok(vec![op("a")])))
            .contains(&Effect::LoadImages)
    );
    assert!(app.update(Msg::Operations(Ok(vec![op("a")]))).is_empty());
}

// ---- polling ------------------------------------------------------------------------------

#[test]
fn polling_is_cheap_and_never_piles_up() {
    let mut app = usual();
    let tick = |app: &mut App, clock: u64| {
        app.set_clock(ms(clock), NOW);
        app.update(Msg::Tick)
    };
    assert!(tick(&mut app, 1_000).is_empty(), "not due before 2 s");
    let first = tick(&mut app, 2_010);
    assert_eq!(
        first,
        vec![
            Effect::LoadVms,
            Effect::LoadCapacity,
            Effect::LoadOperations
        ]
    );
    // The answers have not come back: the next round asks only for nothing twice.
    assert!(tick(&mut app, 4_100).is_empty());
    app.update(Msg::Vms(Ok(vms()), ms(2)));
    app.update(Msg::Capacity(
        Ok(capacity((4, 16), (8, 32), (120, 460))),
        ms(2),
    ));
    app.update(Msg::Operations(Ok(vec![])));
    let mut rounds = vec![];
    for n in 0..6 {
        let effects = tick(&mut app, 6_200 + n * 2_100);
        rounds.push(effects.contains(&Effect::LoadImages));
        for effect in effects {
            match effect {
                Effect::LoadVms => app.update(Msg::Vms(Ok(vms()), ms(1))),
                Effect::LoadCapacity => app.update(Msg::Capacity(
                    Ok(capacity((4, 16), (8, 32), (120, 460))),
                    ms(1),
                )),
                Effect::LoadOperations => app.update(Msg::Operations(Ok(vec![]))),
                Effect::LoadImages => app.update(Msg::Images(Ok(images()), ms(1))),
                Effect::LoadSnapshots => app.update(Msg::Snapshots(Ok(snapshots()))),
                other => panic!("{other:?}"),
            };
        }
    }
    // Images are read every fifth round.
    assert_eq!(rounds.iter().filter(|r| **r).count(), 1, "{rounds:?}");
    // Startup stages are not touched by later loads.
    assert!(
        app.startup
            .iter()
            .all(|s| matches!(s.state, StageState::Done(_)))
    );
}

// ---- selection and keys -------------------------------------------------------------------

#[test]
fn selection_moves_clamps_and_follows_the_vm() {
    let mut app = usual();
    assert_eq!(app.selected_vm().unwrap().name, "dev");
    press(&mut app, "jjjj");
    assert_eq!(app.vm_cursor, 2);
    press(&mut app, "k");
    assert_eq!(app.selected_vm().unwrap().name, "web-1");
    press(&mut app, "g");
    assert_eq!(app.vm_cursor, 0);
    press(&mut app, "G");
    assert_eq!(app.vm_cursor, 2);
    app.update(key(KeyCode::Up));
    assert_eq!(app.selected_vm().unwrap().name, "web-1");
    // A refresh where another VM appears before it keeps web-1 selected.
    let mut more = vms();
    more.insert(0, vm("aaa", "172.30.0.9", VmState::Stopped));
    app.update(Msg::Vms(Ok(more), ms(1)));
    assert_eq!(app.selected_vm().unwrap().name, "web-1");
    // And when it is gone, the cursor stays in range.
    app.update(Msg::Vms(
        Ok(vec![vm("aaa", "172.30.0.9", VmState::Stopped)]),
        ms(1),
    ));
    assert_eq!(app.selected_vm().unwrap().name, "aaa");
}

#[test]
fn quitting_with_q_or_ctrl_c_from_anywhere() {
    let mut app = usual();
    press(&mut app, "q");
    assert!(app.quit);
    let mut app = usual();
    press(&mut app, "c");
    press(&mut app, "q");
    assert!(!app.quit, "q is text in the form");
    app.update(Msg::Key(KeyEvent::new(
        KeyCode::Char('c'),
        KeyModifiers::CONTROL,
    )));
    assert!(app.quit);
}

#[test]
fn help_overlay() {
    let mut app = usual();
    press(&mut app, "?");
    assert_eq!(app.overlay, Some(Overlay::Help));
    insta::assert_snapshot!("help_80x24", screen(&app, 80, 24));
    app.update(key(KeyCode::Esc));
    assert_eq!(app.overlay, None);
    assert!(!app.quit);
}

#[test]
fn delete_asks_first() {
    let mut app = usual();
    press(&mut app, "jd");
    assert_eq!(
        app.overlay,
        Some(Overlay::Confirm("web-1".into(), Action::Delete))
    );
    insta::assert_snapshot!("delete_confirmation", screen(&app, 80, 24));
    assert!(press(&mut app, "x").is_empty(), "other keys keep asking");
    assert!(press(&mut app, "n").is_empty());
    assert_eq!(app.overlay, None);
    press(&mut app, "d");
    assert_eq!(
        press(&mut app, "y"),
        vec![Effect::Act("web-1".into(), Action::Delete)]
    );
    assert!(contains(&app, 80, 24, "Deleting VM web-1…"));
    let effects = app.update(Msg::Acted(
        "web-1".into(),
        Action::Delete,
        Ok(Acted::Deleted),
    ));
    assert_eq!(effects, vec![Effect::LoadVms, Effect::LoadCapacity]);
    assert!(contains(&app, 80, 24, "✓ Deleted VM web-1."));
    // Delete is for VMs only.
    press(&mut app, "2d");
    assert_eq!(app.overlay, None);
}

// ---- VM actions ---------------------------------------------------------------------------

/// A running operation on `target` at stage `at` of the start's (or a stop's) stages.
fn operation(id: &str, kind: OperationKind, target: &str, at: &str) -> Operation {
    let names: &[&str] = match kind {
        OperationKind::StopVm => &["stop"],
        OperationKind::RestartVm => &["stop", "checks", "network", "vmm", "started"],
        _ => &["checks", "network", "vmm", "started"],
    };
    let at_index = names.iter().position(|n| *n == at).unwrap();
    let stages = names
        .iter()
        .enumerate()
        .map(|(i, name)| OpStage {
            name: (*name).into(),
            state: match i.cmp(&at_index) {
                std::cmp::Ordering::Less => OpStageState::Done,
                std::cmp::Ordering::Equal => OpStageState::Running,
                std::cmp::Ordering::Greater => OpStageState::Pending,
            },
            started_at: None,
            ended_at: None,
            message: None,
            progress: None,
        })
        .collect();
    Operation {
        id: id.into(),
        kind,
        target: target.into(),
        state: OperationState::Running,
        stages,
        error: None,
        result: None,
        cancel_requested: false,
        created_at: ago(2),
        ended_at: None,
        version: 2,
    }
}

/// `op` as it ends, failed with bangerd's error.
fn failed_with(op: &Operation, error: ApiError) -> Operation {
    let mut op = op.clone();
    op.state = OperationState::Failed;
    for stage in &mut op.stages {
        if stage.state == OpStageState::Running {
            stage.state = OpStageState::Failed;
        }
    }
    op.error = Some(error);
    op.ended_at = Some(NOW);
    op
}

fn no_firecracker() -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        "Firecracker cannot run VMs here: the configured firecracker binary /nonexistent/firecracker does not exist",
    )
    .with_hint("install Firecracker 1.12.0 or newer and put it in PATH, or set firecracker_bin in config.toml")
}

#[test]
fn action_keys_act_on_the_selected_vm() {
    let mut app = usual();
    // dev is stopped: start goes straight out, and so does a stop (bangerd will refuse it).
    assert_eq!(
        press(&mut app, "s"),
        vec![Effect::Act("dev".into(), Action::Start)]
    );
    assert!(contains(&app, 100, 30, "· Starting VM dev…"));
    assert_eq!(app.tick_interval(), ms(250), "an answer is awaited");
    assert_eq!(
        press(&mut app, "x"),
        vec![Effect::Act("dev".into(), Action::Stop)]
    );
    assert_eq!(
        app.overlay, None,
        "nothing runs in a stopped VM: no question"
    );
    // web-1 runs: p pauses it; once paused, p resumes it.
    assert_eq!(
        press(&mut app, "jp"),
        vec![Effect::Act("web-1".into(), Action::Pause)]
    );
    let mut paused = vms()[1].clone();
    paused.state = VmState::Paused;
    app.update(Msg::Acted(
        "web-1".into(),
        Action::Pause,
        Ok(Acted::Vm(Box::new(paused))),
    ));
    assert_eq!(
        app.selected_vm().unwrap().state,
        VmState::Paused,
        "shown at once"
    );
    assert!(contains(&app, 100, 30, "✓ Paused VM web-1."));
    assert_eq!(
        press(&mut app, "p"),
        vec![Effect::Act("web-1".into(), Action::Resume)]
    );
    // R and x on a VM that runs ask first.
    assert!(press(&mut app, "R").is_empty());
    assert_eq!(
        app.overlay,
        Some(Overlay::Confirm("web-1".into(), Action::Restart))
    );
    app.update(key(KeyCode::Esc));
    // The image view has no VM actions.
    assert!(press(&mut app, "2sxRpd").is_empty());
    assert_eq!(app.overlay, None);
}

#[test]
fn promote_asks_the_image_name_then_follows_the_operation() {
    let mut app = usual();
    // dev is stopped.
    assert!(press(&mut app, "P").is_empty());
    assert!(matches!(&app.overlay, Some(Overlay::Promote(form)) if form.vm == "dev"));
    // Enter with no name: the CLI's rule refuses it in place, nothing sent.
    assert!(app.update(key(KeyCode::Enter)).is_empty());
    press(&mut app, "snap");
    app.update(key(KeyCode::Tab));
    press(&mut app, " ");
    insta::assert_snapshot!("promote_prompt", screen(&app, 80, 24));
    let request = PromoteImageRequest {
        vm: "dev".into(),
        name: "snap".into(),
        with_work: Some(true),
        replace: None,
    };
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        vec![Effect::Promote(request.clone())]
    );
    assert!(contains(&app, 80, 24, "Promoting…"));
    // bangerd refuses (a name taken meanwhile): the prompt stays with its reason.
    let taken = ApiError::new(
        ErrorCode::AlreadyExists,
        r#"an image named "snap" already exists"#,
    )
    .with_hint("pick another name");
    assert!(
        app.update(Msg::Promoted(request.clone(), Err(taken)))
            .is_empty()
    );
    assert!(matches!(app.overlay, Some(Overlay::Promote(_))));
    assert!(contains(
        &app,
        80,
        24,
        r#"✗ an image named "snap" already exists"#
    ));
    // Accepted: the prompt closes and the operation shows like any other.
    app.update(key(KeyCode::Enter));
    let mut op = operation("op-9", OperationKind::StartVm, "snap", "checks");
    op.kind = OperationKind::PromoteImage;
    app.update(Msg::Promoted(request, Ok(op.clone())));
    assert_eq!(app.overlay, None);
    assert_eq!(app.operations, [op.clone()]);
    assert!(contains(&app, 100, 30, "· Promoting VM dev to image snap…"));
    assert!(contains(&app, 100, 30, "promote image snap"));
    // When it ends, the status line says so and the images are read again.
    let mut done = op.clone();
    done.state = OperationState::Succeeded;
    done.ended_at = Some(NOW);
    let effects = app.update(Msg::Operations(Ok(vec![done])));
    assert!(effects.contains(&Effect::LoadImages), "{effects:?}");
    assert!(contains(&app, 100, 30, "✓ promote image snap succeeded."));

    // A running VM: bangerd's refusal, in the prompt; Esc closes it.
    press(&mut app, "jP");
    press(&mut app, "snap2");
    let request = PromoteImageRequest {
        vm: "web-1".into(),
        name: "snap2".into(),
        with_work: None,
        replace: None,
    };
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        vec![Effect::Promote(request.clone())]
    );
    let running = ApiError::new(
        ErrorCode::InvalidState,
        r#"VM "web-1" is running; only a stopped VM's root can become an image"#,
    )
    .with_hint("stop it first: its root is consistent only when the guest has shut down; `banger vm stop web-1` stops it");
    app.update(Msg::Promoted(request, Err(running)));
    assert!(contains(
        &app,
        80,
        24,
        "only a stopped VM's root can become"
    ));
    assert!(contains(&app, 80, 24, "hint: stop it first"));
    app.update(key(KeyCode::Esc));
    assert_eq!(app.overlay, None);
    // The image view has no VM to promote.
    press(&mut app, "2P");
    assert_eq!(app.overlay, None);
}

#[test]
fn stop_and_restart_ask_first_while_the_vm_runs() {
    let mut app = usual();
    assert!(press(&mut app, "jx").is_empty());
    assert_eq!(
        app.overlay,
        Some(Overlay::Confirm("web-1".into(), Action::Stop))
    );
    insta::assert_snapshot!("stop_confirmation_80x24", screen(&app, 80, 24));
    assert!(press(&mut app, "s").is_empty(), "other keys keep asking");
    assert!(app.update(key(KeyCode::Esc)).is_empty());
    assert_eq!(app.overlay, None);
    press(&mut app, "x");
    assert_eq!(
        press(&mut app, "y"),
        vec![Effect::Act("web-1".into(), Action::Stop)]
    );
    assert!(contains(&app, 80, 24, "· Stopping VM web-1…"));

    press(&mut app, "R");
    insta::assert_snapshot!("restart_confirmation_80x24", screen(&app, 80, 24));
    assert!(press(&mut app, "n").is_empty());
    assert_eq!(app.overlay, None);
    press(&mut app, "R");
    assert_eq!(
        press(&mut app, "Y"),
        vec![Effect::Act("web-1".into(), Action::Restart)]
    );
}

#[test]
fn reset_asks_first_for_a_stopped_vm_and_a_running_one_hears_bangerds_refusal() {
    let mut app = usual();
    assert!(press(&mut app, "z").is_empty());
    assert_eq!(
        app.overlay,
        Some(Overlay::Confirm("dev".into(), Action::Reset))
    );
    assert!(contains(&app, 80, 24, "Reset VM dev's root?"));
    assert!(contains(&app, 80, 24, "Its root goes back to its image"));
    assert!(press(&mut app, "n").is_empty());
    assert_eq!(app.overlay, None);
    press(&mut app, "z");
    assert_eq!(
        press(&mut app, "y"),
        vec![Effect::Act("dev".into(), Action::Reset)]
    );
    assert!(contains(&app, 80, 24, "Resetting the root of VM dev"));
    // A running VM is not asked about: bangerd's refusal says to stop it first.
    press(&mut app, "j");
    assert_eq!(
        press(&mut app, "z"),
        vec![Effect::Act("web-1".into(), Action::Reset)]
    );
}

#[test]
fn a_refused_action_shows_bangerds_message_and_hint() {
    let mut app = usual();
    press(&mut app, "x");
    let refusal = ApiError::new(
        ErrorCode::InvalidState,
        r#"VM "dev" is stopped; only a running or paused VM can be stopped"#,
    )
    .with_hint("`banger vm start dev` starts it");
    let effects = app.update(Msg::Acted("dev".into(), Action::Stop, Err(refusal)));
    assert_eq!(
        effects,
        vec![Effect::LoadVms, Effect::LoadCapacity],
        "what is shown may be out of date: read it again"
    );
    insta::assert_snapshot!(
        row_text(&render(&app, 132, 30), 29).trim_end(),
        @r#" ✗ Cannot stop VM dev: VM "dev" is stopped; only a running or paused VM can be stopped  hint: `banger vm start dev` starts it"#
    );
    assert_eq!(
        app.tick_interval(),
        ms(1_000),
        "nothing is awaited any more"
    );
}

#[test]
fn a_start_shows_its_stage_on_the_vm_until_it_ends() {
    let mut app = usual();
    app.set_clock(ms(100), NOW);
    press(&mut app, "s");
    let start = operation("op-7", OperationKind::StartVm, "dev", "checks");
    let effects = app.update(Msg::Acted(
        "dev".into(),
        Action::Start,
        Ok(Acted::Operation(start.clone())),
    ));
    assert_eq!(effects, vec![Effect::LoadVms, Effect::LoadCapacity]);
    assert_eq!(app.poll_interval(), ms(500), "polls faster while it runs");
    // The next poll comes within the busy interval, not the idle one.
    app.set_clock(ms(2_000), NOW);
    app.update(Msg::Tick);
    app.update(Msg::Vms(Ok(vms()), ms(1)));
    app.update(Msg::Capacity(
        Ok(capacity((4, 16), (8, 32), (120, 460))),
        ms(1),
    ));
    app.set_clock(ms(2_600), NOW);
    let effects = app.update(Msg::Tick);
    assert!(effects.contains(&Effect::LoadVms), "{effects:?}");

    // bangerd reports the VM starting and the operation at its vmm stage.
    let mut list = vms();
    list[0].state = VmState::Starting;
    app.update(Msg::Vms(Ok(list), ms(1)));
    let at_vmm = operation("op-7", OperationKind::StartVm, "dev", "vmm");
    app.update(Msg::Operations(Ok(vec![at_vmm.clone()])));
    insta::assert_snapshot!("vm_starting_80x24", screen(&app, 80, 24));

    // It fails: the status line says why, with bangerd's hint, and the lists are read again.
    let effects = app.update(Msg::Operations(Ok(vec![failed_with(
        &at_vmm,
        no_firecracker(),
    )])));
    assert!(effects.contains(&Effect::LoadVms), "{effects:?}");
    assert!(app.operations.is_empty());
    let status = row_text(&render(&app, 200, 30), 29);
    assert!(
        status.contains(
            "✗ start vm dev failed: Firecracker cannot run VMs here: the configured firecracker binary /nonexistent/firecracker does not exist  hint: install Firecracker"
        ),
        "{status}"
    );
    assert_eq!(app.poll_interval(), ms(2_000));
}

#[test]
fn a_poll_sent_before_an_action_does_not_end_its_operation() {
    let mut app = usual();
    app.set_clock(ms(2_100), NOW);
    let effects = app.update(Msg::Tick);
    assert!(effects.contains(&Effect::LoadOperations));
    press(&mut app, "s");
    let start = operation("op-8", OperationKind::StartVm, "dev", "checks");
    app.update(Msg::Acted(
        "dev".into(),
        Action::Start,
        Ok(Acted::Operation(start.clone())),
    ));
    // The answer to the poll asked before the start: it cannot list the operation yet.
    app.update(Msg::Operations(Ok(vec![])));
    assert_eq!(app.operations, vec![start.clone()], "still followed");
    assert!(contains(&app, 100, 30, "· Starting VM dev…"));
    // A later answer that lists it, then one where it succeeded.
    app.update(Msg::Operations(Ok(vec![start.clone()])));
    let mut done = start.clone();
    done.state = OperationState::Succeeded;
    app.update(Msg::Operations(Ok(vec![done])));
    assert!(app.operations.is_empty());
    assert!(contains(&app, 100, 30, "✓ start vm dev succeeded."));

    // Without a poll on its way, an operation the daemon does not list has ended (bangerd
    // restarted and forgot it): the app does not wait for it forever.
    let mut app = usual();
    press(&mut app, "s");
    app.update(Msg::Acted(
        "dev".into(),
        Action::Start,
        Ok(Acted::Operation(start)),
    ));
    app.update(Msg::Operations(Ok(vec![])));
    assert!(app.operations.is_empty());
    assert!(contains(&app, 100, 30, "· start vm dev ended."));
}

#[test]
fn an_operation_that_ended_before_its_answer_is_said_at_once() {
    let mut app = usual();
    press(&mut app, "s");
    let start = operation("op-9", OperationKind::StartVm, "dev", "checks");
    app.update(Msg::Acted(
        "dev".into(),
        Action::Start,
        Ok(Acted::Operation(failed_with(&start, no_firecracker()))),
    ));
    assert!(app.operations.is_empty());
    assert!(contains(
        &app,
        200,
        30,
        "✗ start vm dev failed: Firecracker cannot run VMs here"
    ));
}

#[test]
fn a_failed_vm_shows_why_with_its_console_lines() {
    let mut app = usual();
    press(&mut app, "G");
    insta::assert_snapshot!("vm_failed_detail_80x24", screen(&app, 80, 24));
    insta::assert_snapshot!("vm_failed_detail_100x30", screen(&app, 100, 30));
    // A stopped VM whose last start failed says so more quietly.
    let mut stopped = vm("dev", "172.30.0.2", VmState::Stopped);
    stopped.last_error = Some(no_firecracker().message);
    let app = loaded(
        Theme::colored(),
        vec![stopped],
        images(),
        capacity((0, 16), (0, 32), (1, 460)),
    );
    assert!(contains(
        &app,
        100,
        30,
        "last error: Firecracker cannot run VMs here: the configured firecracker binary"
    ));
}

#[test]
fn states_are_coloured_in_the_list_and_the_details() {
    let app = usual();
    let buffer = render(&app, 100, 30);
    let colour_of = |y: u16, text: &str| {
        let row = row_text(&buffer, y);
        let at = row.find(text).unwrap_or_else(|| panic!("{text} in {row}"));
        buffer[(row[..at].chars().count() as u16, y)].fg
    };
    let row_of = |name: &str| {
        (0..30)
            .find(|y| row_text(&buffer, *y).contains(name))
            .unwrap()
    };
    assert_eq!(colour_of(row_of("web-1"), "running"), Color::Green);
    assert_eq!(colour_of(row_of("a-very-long"), "failed"), Color::Red);
    // The details of dev (selected): its state line.
    let detail_state = (8..30)
        .find(|y| row_text(&buffer, *y).contains("state  "))
        .unwrap();
    assert_eq!(
        colour_of(detail_state, "stopped"),
        Theme::colored().state(VmState::Stopped).fg.unwrap()
    );
}

// ---- the create form ----------------------------------------------------------------------

fn type_into(app: &mut App, field_text: &[&str]) {
    for (i, text) in field_text.iter().enumerate() {
        if i > 0 {
            app.update(key(KeyCode::Tab));
        }
        for c in text.chars() {
            app.update(key(KeyCode::Char(c)));
        }
    }
}

#[test]
fn the_form_refuses_what_the_cli_refuses_under_each_field() {
    let mut app = usual();
    press(&mut app, "c");
    // Name, Image (skipped: no text), vCPUs, memory, disk, work disk.
    type_into(&mut app, &["Bad_Name", "", "0", "64", "4X", "20T"]);
    assert!(app.update(key(KeyCode::Enter)).is_empty());
    let Some(Overlay::Create(form)) = &app.overlay else {
        panic!("the form closed");
    };
    let errors: Vec<String> = Field::ALL
        .iter()
        .filter_map(|f| {
            form.error(*f)
                .map(|e| format!("{}: {}", f.label(), e.message))
        })
        .collect();
    assert_eq!(
        errors,
        [
            r#"Name: VM name "Bad_Name" contains 'B' (names are lower-case)"#,
            "vCPUs: vCPUs must be at least 1 (got 0)",
            "Memory MiB: memory must be at least 128 MiB (got 64)",
            r#"Disk: "4X" is not a size"#,
            "Work disk: work disk size must be at most 16T (got 20T)",
        ]
    );
    assert_eq!(form.focus, Field::Name, "the first error gets the focus");
    insta::assert_snapshot!("create_form_errors_80x24", screen(&app, 80, 24));
}

#[test]
fn errors_clear_as_they_are_fixed_and_a_valid_form_sends_the_clis_request() {
    let mut app = usual();
    press(&mut app, "c");
    type_into(&mut app, &["dev2", "", "x"]);
    assert!(app.update(key(KeyCode::Enter)).is_empty());
    let form = |app: &App| match &app.overlay {
        Some(Overlay::Create(form)) => (**form).clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        form(&app).error(Field::Vcpus).unwrap().message,
        r#"vCPUs must be a whole number (got "x")"#
    );
    app.update(key(KeyCode::Backspace));
    assert_eq!(form(&app).error(Field::Vcpus), None, "fixed by emptying it");
    press(&mut app, "2");
    // Image: choose the second image with →.
    app.update(key(KeyCode::Up));
    app.update(key(KeyCode::Right));
    app.update(key(KeyCode::Right));
    assert_eq!(form(&app).image.as_deref(), Some("debian"));
    for _ in 0..5 {
        app.update(key(KeyCode::Down));
    }
    assert_eq!(form(&app).focus, Field::Nat);
    press(&mut app, " ");
    let effects = app.update(key(KeyCode::Enter));
    let expected = banger_api::CreateVmRequest {
        name: Some("dev2".into()),
        image: Some("debian".into()),
        vcpus: Some(2),
        nat: Some(true),
        start: Some(true),
        ..Default::default()
    };
    assert_eq!(effects, vec![Effect::CreateVm(expected)]);
    assert!(form(&app).pending);
    insta::assert_snapshot!("create_form_pending", screen(&app, 80, 24));
    assert!(
        press(&mut app, "zz").is_empty(),
        "no edits while it is sent"
    );

    // bangerd refuses: the answer lands under the field it is about.
    app.update(Msg::Created(Box::new(Err(ApiError::new(
        ErrorCode::InvalidInput,
        "vCPUs must be at most 16, the number of CPUs on this host (got 20)",
    )))));
    assert_eq!(form(&app).focus, Field::Vcpus);
    assert!(!form(&app).pending);
    insta::assert_snapshot!("create_form_daemon_refusal", screen(&app, 80, 24));

    // Accepted: the form closes, the new VM is selected and the list is reloaded; its start
    // is followed like any other.
    app.update(key(KeyCode::Enter));
    let mut created = vm("dev2", "172.30.0.5", VmState::Starting);
    created.nat = true;
    let start = operation("op-start", OperationKind::StartVm, "dev2", "checks");
    let effects = app.update(Msg::Created(Box::new(Ok(banger_api::CreatedVm {
        vm: created,
        operation: Some(start.clone()),
    }))));
    assert_eq!(effects, vec![Effect::LoadVms, Effect::LoadCapacity]);
    assert_eq!(app.overlay, None);
    assert_eq!(app.selected_vm().unwrap().name, "dev2");
    assert!(contains(&app, 80, 24, "· Created VM dev2; starting it…"));
    assert_eq!(app.operations, vec![start]);
    assert!(contains(&app, 100, 30, "starting · checks"));
    assert_eq!(app.poll_interval(), ms(500));
}

#[test]
fn a_vm_created_without_start_says_so() {
    let mut app = usual();
    press(&mut app, "c");
    app.update(key(KeyCode::Enter));
    app.update(Msg::Created(Box::new(Ok(banger_api::CreatedVm {
        vm: vm("dev3", "172.30.0.6", VmState::Stopped),
        operation: None,
    }))));
    assert!(contains(&app, 80, 24, "✓ Created VM dev3 (not started)."));
    assert!(app.operations.is_empty());
}

#[test]
fn esc_cancels_the_form() {
    let mut app = usual();
    press(&mut app, "cabc");
    assert!(app.update(key(KeyCode::Esc)).is_empty());
    assert_eq!(app.overlay, None);
}

#[test]
fn the_image_choice_cycles_through_the_default_and_the_loaded_images() {
    let mut form = CreateForm::default();
    let images = vec!["a".to_string(), "b".to_string()];
    form.focus = Field::Image;
    let mut seen = vec![];
    for _ in 0..4 {
        form.handle_key(super::plain_key(KeyCode::Right), &images);
        seen.push(form.image.clone());
    }
    assert_eq!(
        seen,
        [Some("a".into()), Some("b".into()), None, Some("a".into())]
    );
    form.handle_key(super::plain_key(KeyCode::Left), &images);
    assert_eq!(form.image, None);
    // With no images loaded there is only the default.
    form.handle_key(super::plain_key(KeyCode::Right), &[]);
    assert_eq!(form.image, None);
    assert_eq!(
        form.handle_key(super::plain_key(KeyCode::Enter), &[]),
        Outcome::Submit(banger_api::CreateVmRequest {
            start: Some(true),
            ..Default::default()
        })
    );
}

#[test]
fn daemon_refusals_are_placed_under_their_field() {
    let cases = [
        (
            ErrorCode::AlreadyExists,
            r#"a VM named "dev" already exists"#,
            Some(Field::Name),
        ),
        (
            ErrorCode::InvalidInput,
            r#"unknown image "debian""#,
            Some(Field::Image),
        ),
        (
            ErrorCode::InvalidInput,
            "vCPUs must be at most 2, the number of CPUs on this host (got 3)",
            Some(Field::Vcpus),
        ),
        (
            ErrorCode::InvalidInput,
            "memory of 99999 MiB is more than this host's 8G",
            Some(Field::Memory),
        ),
        (
            ErrorCode::InvalidInput,
            "disk size must be at least 256M (got 1M)",
            Some(Field::Disk),
        ),
        (
            ErrorCode::InvalidInput,
            "work disk size must be at least 64M (got 1M)",
            Some(Field::WorkDisk),
        ),
        (
            ErrorCode::Exhausted,
            "no free guest IP left in 172.30.0.0/24",
            None,
        ),
    ];
    for (code, message, field) in cases {
        assert_eq!(field_of(&ApiError::new(code, message)), field, "{message}");
    }
    let mut app = usual();
    press(&mut app, "c");
    app.update(key(KeyCode::Enter));
    app.update(Msg::Created(Box::new(Err(ApiError::new(
        ErrorCode::Exhausted,
        "no free guest IP left in 172.30.0.0/24",
    )
    .with_hint(
        "delete VMs you no longer need, or choose a larger subnet",
    )))));
    insta::assert_snapshot!("create_form_general_error", screen(&app, 80, 24));
}

// ---- console, ssh and health ---------------------------------------------------------------

fn chunk(offset: u64, text: &str) -> ConsoleChunk {
    ConsoleChunk {
        offset,
        next_offset: offset + text.len() as u64,
        text: text.into(),
    }
}

/// What a booting Debian guest prints, colours, a terminal title and a tab included.
const CONSOLE: &str = "[    0.000000] Linux version 6.1.0-27-cloud-amd64 (debian-kernel@lists.debian.org)\n\
    [    0.412345] virtio_blk virtio0: [vda] 16777216 512-byte logical blocks (8.59 GB/8.00 GiB)\n\
    [    1.020000] banger-init: mounting the overlay root\n\
    \u{1b}]0;dev\u{7}[  \u{1b}[0;32mOK\u{1b}[0m  ] Started \u{1b}[0;1;39mssh.service\u{1b}[0m - OpenBSD Secure Shell server.\n\
    [  \u{1b}[0;32mOK\u{1b}[0m  ] Reached target multi-user.target\tMulti-User System.\n\
    \n\
    Debian GNU/Linux 12 dev ttyS0\n\
    \n\
    dev login: ";

fn at(app: &mut App, clock: u64, msg: Msg) -> Vec<Effect> {
    app.set_clock(ms(clock), NOW);
    app.update(msg)
}

#[test]
fn l_opens_the_console_reads_on_while_open_and_esc_closes_it() {
    let mut app = usual();
    app.update(Msg::Resize(80, 24));
    press(&mut app, "j");
    assert_eq!(
        press(&mut app, "l"),
        vec![Effect::LoadConsole("web-1".into(), None)],
        "the tail first"
    );
    assert!(contains(&app, 80, 24, "Reading the console of web-1…"));
    assert!(
        at(&mut app, 600, Msg::Tick).is_empty(),
        "one read at a time"
    );
    at(
        &mut app,
        700,
        Msg::Console("web-1".into(), None, Ok(chunk(0, CONSOLE))),
    );
    insta::assert_snapshot!("logs_view_80x24", screen(&app, 80, 24));
    let shown = screen(&app, 80, 24);
    assert!(!shown.contains('\u{1b}'), "no escape reaches the terminal");
    assert!(shown.contains("] Started ssh.service - OpenBSD"), "{shown}");
    assert!(at(&mut app, 1_000, Msg::Tick).is_empty(), "not due yet");
    let end = CONSOLE.len() as u64;
    let next = Some(end);
    assert_eq!(
        at(&mut app, 1_200, Msg::Tick),
        vec![Effect::LoadConsole("web-1".into(), next)],
        "then on from where the last read ended"
    );
    at(
        &mut app,
        1_250,
        Msg::Console("web-1".into(), next, Ok(chunk(end, "root\n"))),
    );
    assert!(contains(&app, 80, 24, "dev login: root"));
    assert!(contains(&app, 80, 24, " following "));
    // Everything fits: there is nothing to scroll back to.
    press(&mut app, "k");
    assert!(contains(&app, 80, 24, " following "));
    // More than fits: the view scrolls back and forth; the title says where it is.
    let more: String = (1..=20)
        .map(|n| format!("[  OK  ] Started unit {n}.\n"))
        .collect();
    let from = end + 5;
    at(&mut app, 2_000, Msg::Tick);
    at(
        &mut app,
        2_010,
        Msg::Console("web-1".into(), Some(from), Ok(chunk(from, &more))),
    );
    assert!(contains(&app, 80, 24, "Started unit 20."));
    press(&mut app, "kk");
    assert!(contains(&app, 80, 24, " 2 lines back "));
    assert!(!contains(&app, 80, 24, "Started unit 20."));
    assert!(contains(&app, 80, 24, "Started unit 18."));
    press(&mut app, "G");
    assert!(contains(&app, 80, 24, " following "));
    // Other keys of the main view do nothing while it is open.
    assert!(press(&mut app, "sxd").is_empty());
    assert!(matches!(app.overlay, Some(Overlay::Logs(_))));
    app.update(key(KeyCode::Esc));
    assert_eq!(app.overlay, None);
    assert!(
        at(&mut app, 5_000, Msg::Tick)
            .iter()
            .all(|e| !matches!(e, Effect::LoadConsole(..))),
        "a closed view is not read"
    );
    // An answer that arrives after the view closed changes nothing.
    at(
        &mut app,
        5_001,
        Msg::Console("web-1".into(), next, Ok(chunk(0, "late\n"))),
    );
    assert_eq!(app.overlay, None);
    press(&mut app, "lq");
    assert_eq!(app.overlay, None, "q closes it, and does not quit");
    assert!(!app.quit);
}

#[test]
fn the_console_of_a_stopped_vm_is_its_last_boot_or_says_it_is_empty() {
    let mut app = usual();
    app.update(Msg::Resize(80, 24));
    press(&mut app, "l");
    at(
        &mut app,
        100,
        Msg::Console("dev".into(), None, Ok(chunk(0, ""))),
    );
    insta::assert_snapshot!("logs_empty_stopped_80x24", screen(&app, 80, 24));
    app.update(key(KeyCode::Esc));
    press(&mut app, "l");
    at(
        &mut app,
        200,
        Msg::Console(
            "dev".into(),
            None,
            Ok(chunk(0, "[    3.1] reboot: Power down\n")),
        ),
    );
    assert!(contains(&app, 80, 24, " stopped: its last boot "));
    // A failed read says so under what was read before.
    let effects = at(&mut app, 800, Msg::Tick);
    assert_eq!(effects, vec![Effect::LoadConsole("dev".into(), Some(29))]);
    at(
        &mut app,
        810,
        Msg::Console(
            "dev".into(),
            Some(29),
            Err(ApiError::new(
                ErrorCode::Unavailable,
                "bangerd is not running",
            )),
        ),
    );
    assert!(contains(&app, 80, 24, "reboot: Power down"));
    assert!(contains(
        &app,
        80,
        24,
        "✗ cannot read the console: bangerd is not running"
    ));
    // The console is a VM's: nothing to open in the image view.
    app.update(key(KeyCode::Esc));
    assert!(press(&mut app, "2l").is_empty());
    assert_eq!(app.overlay, None);
}

#[test]
fn the_console_page_follows_the_terminal_size() {
    let mut app = usual();
    app.update(Msg::Resize(100, 30));
    press(&mut app, "l");
    let text: String = (1..=100).map(|n| format!("line {n} tail {n}\n")).collect();
    at(
        &mut app,
        100,
        Msg::Console("dev".into(), None, Ok(chunk(0, &text))),
    );
    // 30 rows: header, bars, status, two borders and the key line leave 24 for the console.
    let buffer = render(&app, 100, 30);
    assert!(row_text(&buffer, 3).contains("line 77"));
    assert!(row_text(&buffer, 26).contains("line 100"));
    press(&mut app, "g");
    assert!(contains(&app, 100, 30, "line 1 "));
    assert!(contains(&app, 100, 30, "line 24 "));
    assert!(!contains(&app, 100, 30, "line 25 "));
    app.update(key(KeyCode::PageDown));
    assert!(contains(&app, 100, 30, "line 48 "));
    // A smaller terminal: the view keeps a full page.
    app.update(Msg::Resize(80, 24));
    app.update(key(KeyCode::Home));
    assert!(contains(&app, 80, 24, "line 18 "));
    assert!(!contains(&app, 80, 24, "line 19 "));
    // ← → shift long lines.
    app.update(key(KeyCode::Right));
    assert!(!contains(&app, 80, 24, "line 18 "));
    assert!(contains(&app, 80, 24, "│ tail 18 "));
}

fn ssh_session(name: &str) -> SshSession {
    let access = SshAccess {
        user: "root".into(),
        host: "172.30.0.3".into(),
        port: 22,
        identity_file: "/home/u/.local/state/banger/ssh/id_ed25519".into(),
        known_hosts_file: "/home/u/.local/state/banger/vms/x/known_hosts".into(),
        running: true,
    };
    SshSession::new(name, access, &[])
}

#[test]
fn ssh_is_refused_for_a_vm_that_does_not_run() {
    let mut app = usual();
    // dev is stopped.
    assert!(press(&mut app, "S").is_empty());
    assert!(app.take_session().is_none());
    assert!(contains(
        &app,
        100,
        30,
        "✗ Cannot ssh into VM dev: VM dev is stopped, not running  hint: s starts it"
    ));
    assert!(app.update(key(KeyCode::Enter)).is_empty(), "Enter too");
    // A paused VM is resumed first.
    let mut paused = vms();
    paused[1].state = VmState::Paused;
    app.update(Msg::Vms(Ok(paused), ms(1)));
    press(&mut app, "j");
    assert!(press(&mut app, "S").is_empty());
    assert!(contains(&app, 100, 30, "hint: p resumes it"));
    // ssh is for VMs only.
    assert!(press(&mut app, "2S").is_empty());
}

#[test]
fn ssh_runs_once_bangerd_says_how_and_says_the_vm_still_runs_after() {
    let mut app = usual();
    press(&mut app, "j");
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        vec![Effect::PrepareSsh("web-1".into())]
    );
    assert!(
        press(&mut app, "S").is_empty(),
        "a second press while bangerd is asked would start a second session"
    );
    assert!(contains(&app, 100, 30, "Connecting to VM web-1…"));
    assert!(app.take_session().is_none(), "not before bangerd answered");
    app.update(Msg::SshReady("web-1".into(), Ok(ssh_session("web-1"))));
    let session = app
        .take_session()
        .expect("the session waits for the terminal");
    assert_eq!(session.name(), "web-1");
    assert!(app.take_session().is_none(), "taken once");
    let effects = app.update(Msg::SshEnded(
        "web-1".into(),
        Ok(SshEnded {
            code: 0,
            still_running: true,
        }),
    ));
    assert_eq!(
        effects,
        vec![Effect::LoadVms, Effect::LoadCapacity],
        "the guest may have been shut down from inside"
    );
    assert!(contains(
        &app,
        100,
        30,
        "· Back from VM web-1 (ssh exit status 0); it is still running.  hint: x stops it"
    ));
    app.update(Msg::SshEnded(
        "web-1".into(),
        Ok(SshEnded {
            code: 0,
            still_running: false,
        }),
    ));
    assert!(contains(&app, 100, 30, "it has stopped."));
    app.update(Msg::SshEnded(
        "web-1".into(),
        Ok(SshEnded {
            code: 255,
            still_running: true,
        }),
    ));
    assert!(contains(
        &app,
        100,
        30,
        "✗ ssh into VM web-1 failed (exit status 255)."
    ));
}

#[test]
fn ssh_refusals_and_a_missing_ssh_are_shown_with_their_hint() {
    let mut app = usual();
    press(&mut app, "jS");
    app.update(Msg::SshReady(
        "web-1".into(),
        Err(
            ApiError::new(ErrorCode::InvalidState, r#"VM "web-1" is not running"#)
                .with_hint("start it with `banger vm start web-1`"),
        ),
    ));
    assert!(app.take_session().is_none());
    assert!(contains(
        &app,
        100,
        30,
        r#"✗ Cannot ssh into VM web-1: VM "web-1" is not running"#
    ));
    app.update(Msg::SshEnded(
        "web-1".into(),
        Err(
            ApiError::new(ErrorCode::Unavailable, "cannot run ssh: ssh was not found")
                .with_hint("install the OpenSSH client (sudo apt-get install openssh-client)"),
        ),
    ));
    assert!(contains(
        &app,
        200,
        30,
        "✗ Cannot ssh into VM web-1: cannot run ssh: ssh was not found  hint: install the OpenSSH client"
    ));
}

fn health(ready: bool) -> Health {
    Health {
        ready,
        version: "0.1.0".into(),
        hostname: "web-1".into(),
        uptime_ms: 61_500,
        boot: [
            ("kernel", 0),
            ("init", 812),
            ("network", 1_204),
            ("agent", 1_530),
        ]
        .into_iter()
        .map(|(name, at_ms)| BootStage {
            name: name.into(),
            at_ms,
        })
        .collect(),
        listeners: vec!["tcp:172.30.0.3:1024".into()],
    }
}

fn running(name: &str, ip: &str) -> Vm {
    let mut vm = vm(name, ip, VmState::Running);
    vm.runtime = Some(runtime(&vm, 120));
    vm
}

/// An app that found bangerd and has everything but the VM list.
fn without_vms() -> App {
    let mut app = App::new(Theme::colored(), NOW);
    app.update(Msg::DaemonReady(info()));
    app.update(Msg::Operations(Ok(Vec::new())));
    app.update(Msg::Capacity(
        Ok(capacity((4, 16), (8, 32), (120, 460))),
        ms(1),
    ));
    app.update(Msg::Images(Ok(images()), ms(1)));
    app
}

#[test]
fn health_is_asked_one_vm_at_a_time_on_a_schedule() {
    let three = vec![
        running("alpha", "172.30.0.2"),
        vm("bravo", "172.30.0.3", VmState::Stopped),
        running("charlie", "172.30.0.4"),
    ];
    let mut app = without_vms();
    // Nothing runs before the list arrives: nothing to ask.
    assert!(
        at(&mut app, 0, Msg::Tick)
            .iter()
            .all(|e| !matches!(e, Effect::LoadHealth(_)))
    );
    let health_of = |effects: Vec<Effect>| -> Vec<String> {
        effects
            .into_iter()
            .filter_map(|e| match e {
                Effect::LoadHealth(name) => Some(name),
                _ => None,
            })
            .collect()
    };
    // The list arrives: the selected running VM is asked at once, and only it.
    let effects = at(&mut app, 10, Msg::Vms(Ok(three.clone()), ms(1)));
    assert_eq!(health_of(effects), ["alpha"]);
    assert!(
        health_of(at(&mut app, 1_000, Msg::Tick)).is_empty(),
        "one in flight at most"
    );
    assert!(health_of(at(&mut app, 1_100, Msg::Vms(Ok(three.clone()), ms(1)))).is_empty());
    // Its answer lets the next due VM be asked at once; a stopped one never is.
    let effects = at(
        &mut app,
        1_200,
        Msg::Health("alpha".into(), Ok(health(true))),
    );
    assert_eq!(health_of(effects), ["charlie"]);
    let effects = at(
        &mut app,
        1_300,
        Msg::Health(
            "charlie".into(),
            Err(ApiError::new(ErrorCode::Unavailable, "connection refused")),
        ),
    );
    assert!(health_of(effects).is_empty(), "nobody is due");
    // The selected VM every 3 s, the others every 10 s.
    assert!(health_of(at(&mut app, 4_100, Msg::Tick)).is_empty());
    assert_eq!(health_of(at(&mut app, 4_200, Msg::Tick)), ["alpha"]);
    at(
        &mut app,
        4_300,
        Msg::Health("alpha".into(), Ok(health(true))),
    );
    assert_eq!(health_of(at(&mut app, 7_300, Msg::Tick)), ["alpha"]);
    at(
        &mut app,
        7_400,
        Msg::Health("alpha".into(), Ok(health(true))),
    );
    assert_eq!(health_of(at(&mut app, 10_400, Msg::Tick)), ["alpha"]);
    at(
        &mut app,
        10_500,
        Msg::Health("alpha".into(), Ok(health(true))),
    );
    assert!(
        health_of(at(&mut app, 11_200, Msg::Tick)).is_empty(),
        "charlie's 10 s are not over"
    );
    assert_eq!(health_of(at(&mut app, 11_300, Msg::Tick)), ["charlie"]);
    at(
        &mut app,
        11_400,
        Msg::Health("charlie".into(), Ok(health(false))),
    );
    // Selecting charlie puts it on the 3 s schedule.
    press(&mut app, "G");
    assert_eq!(app.selected_vm().unwrap().name, "charlie");
    assert_eq!(health_of(at(&mut app, 14_400, Msg::Tick)), ["charlie"]);
    // A VM that stops loses its answer; its next start is asked afresh.
    let mut stopped = three.clone();
    stopped[2].state = VmState::Stopped;
    at(
        &mut app,
        14_500,
        Msg::Health("charlie".into(), Ok(health(true))),
    );
    at(&mut app, 14_600, Msg::Vms(Ok(stopped), ms(1)));
    assert!(!app.health.contains_key("charlie"));
    assert!(app.health.contains_key("alpha"));
}

#[test]
fn the_health_column_and_the_details_at_80x24() {
    let mut web = running("web-1", "172.30.0.3");
    web.vcpus = 4;
    web.memory_mib = 4096;
    let list = vec![
        vm("dev", "172.30.0.2", VmState::Stopped),
        web,
        running("api", "172.30.0.4"),
        running("build-worker-7", "172.30.0.5"),
        running("fresh", "172.30.0.6"),
    ];
    let mut app = usual_with(list, images());
    app.set_clock(ms(100), NOW);
    app.update(Msg::Health("web-1".into(), Ok(health(true))));
    app.update(Msg::Health("api".into(), Ok(health(false))));
    app.update(Msg::Health(
        "build-worker-7".into(),
        Err(ApiError::new(
            ErrorCode::Unavailable,
            "the guest agent did not answer within 5s",
        )),
    ));
    app.set_clock(ms(2_100), NOW);
    press(&mut app, "j");
    insta::assert_snapshot!("health_column_80x24", screen(&app, 80, 24));
    let shown = screen(&app, 80, 24);
    for expected in [
        "ok · up 1m 3s · agent 0.1.0",
        "boot: kernel 0ms · init 812ms · network 1.2s · agent 1.5s",
    ] {
        assert!(shown.contains(expected), "{expected}: {shown}");
    }
    press(&mut app, "jj");
    assert!(contains(
        &app,
        132,
        43,
        "unreachable: the guest agent did not answer within 5s"
    ));
    press(&mut app, "j");
    assert!(contains(&app, 80, 24, "asking…"));
    // The colours say the same as the words.
    let buffer = render(&app, 80, 24);
    let color_of = |word: &str| {
        (0..24)
            .find_map(|y| {
                let row = row_text(&buffer, y);
                let x = row.find(&format!("  {word}"))?;
                let col = row[..x + 2].chars().count() as u16;
                Some(buffer[(col, y)].fg)
            })
            .unwrap()
    };
    assert_eq!(color_of("ok"), Color::Green);
    assert_eq!(color_of("starting"), Color::Yellow);
    assert_eq!(color_of("unreachable"), Color::Red);
}

// ---- sizes --------------------------------------------------------------------------------

#[test]
fn small_terminals_degrade_without_panicking() {
    let mut app = usual();
    insta::assert_snapshot!("tiny_40x12", screen(&app, 40, 12));
    press(&mut app, "c");
    insta::assert_snapshot!("tiny_40x12_form", screen(&app, 40, 12));
    app.update(key(KeyCode::Esc));
    press(&mut app, "?");
    insta::assert_snapshot!("tiny_40x12_help", screen(&app, 40, 12));
}

#[test]
fn every_state_renders_at_every_size() {
    let mut states = vec![App::new(Theme::colored(), NOW), usual()];
    let mut app = usual();
    press(&mut app, "c");
    type_into(&mut app, &["Bad_Name", "", "0", "64", "4X", "20T"]);
    app.update(key(KeyCode::Enter));
    states.push(app.clone());
    app.update(key(KeyCode::Esc));
    press(&mut app, "d");
    states.push(app.clone());
    app.update(key(KeyCode::Esc));
    press(&mut app, "jx");
    states.push(app.clone());
    app.update(key(KeyCode::Esc));
    press(&mut app, "j");
    states.push(app.clone());
    app.update(Msg::Operations(Ok(vec![operation(
        "op-stop",
        OperationKind::StopVm,
        "web-1",
        "stop",
    )])));
    press(&mut app, "k");
    states.push(app.clone());
    press(&mut app, "?");
    states.push(app.clone());
    app.update(key(KeyCode::Esc));
    press(&mut app, "P");
    press(&mut app, "a-long-image-name");
    app.update(Msg::Promoted(
        PromoteImageRequest {
            vm: "web-1".into(),
            name: "a-long-image-name".into(),
            with_work: None,
            replace: None,
        },
        Err(ApiError::new(ErrorCode::InvalidState, "x ".repeat(300)).with_hint("y ".repeat(90))),
    ));
    states.push(app.clone());
    app.update(key(KeyCode::Esc));
    press(&mut app, "2");
    states.push(app.clone());
    // The snapshots view, its prompts and its question.
    app.update(Msg::Snapshots(Ok(snapshots())));
    press(&mut app, "3");
    states.push(app.clone());
    app.update(key(KeyCode::Enter));
    press(&mut app, "a-new-vm");
    app.update(key(KeyCode::Enter));
    app.update(Msg::Created(Box::new(Err(ApiError::new(
        ErrorCode::InvalidState,
        "x ".repeat(300),
    )
    .with_hint("y ".repeat(90))))));
    states.push(app.clone());
    app.update(key(KeyCode::Esc));
    press(&mut app, "d");
    states.push(app.clone());
    app.update(key(KeyCode::Esc));
    press(&mut app, "1jn");
    states.push(app.clone());
    app.update(key(KeyCode::Esc));
    states.push(bars_at(Theme::plain(), 100));
    // The console view, empty and with long lines shifted; health of every kind.
    let mut app = usual();
    press(&mut app, "jl");
    states.push(app.clone());
    let long: String = (0..40)
        .map(|n| format!("{n} {}\n", "x".repeat(200)))
        .collect();
    app.update(Msg::Console("web-1".into(), None, Ok(chunk(0, &long))));
    app.update(key(KeyCode::Right));
    states.push(app.clone());
    app.update(key(KeyCode::Esc));
    app.update(Msg::Health("web-1".into(), Ok(health(true))));
    states.push(app.clone());
    app.update(Msg::Health(
        "web-1".into(),
        Err(ApiError::new(ErrorCode::Unavailable, "x ".repeat(300))),
    ));
    states.push(app.clone());
    for state in &states {
        for (w, h) in [
            (1, 1),
            (2, 2),
            (10, 3),
            (20, 5),
            (30, 8),
            (40, 12),
            (60, 15),
            (80, 24),
            (132, 43),
            (300, 100),
        ] {
            render(state, w, h);
        }
    }
}

// ---- published ports ----------------------------------------------------------------------

#[test]
fn the_vm_detail_lists_published_ports_as_urls() {
    let mut dev = vm("dev", "172.30.0.2", VmState::Running);
    dev.runtime = Some(runtime(&dev, 60));
    dev.published_ports = fixtures::published_ports();
    let app = usual_with(vec![dev], images());
    assert!(contains(&app, 100, 30, "http://127.0.0.1:8080 → 4096"));
    assert!(contains(&app, 100, 30, "http://127.0.0.1:9000 → 80"));
    insta::assert_snapshot!("vm_detail_published_ports", screen(&app, 100, 30));
}

#[test]
fn the_vm_detail_lists_image_services_with_their_addresses() {
    let mut dev = vm("dev", "172.30.0.2", VmState::Running);
    dev.runtime = Some(runtime(&dev, 60));
    dev.image = banger_api::ImageRef {
        id: "img-builder-0123456789abcdef".into(),
        name: "builder".into(),
    };
    let mut images = images();
    images[0].manifest.services.push(ServiceCheck {
        name: "api".into(),
        port: 3000,
        timeout_secs: Some(300),
        http: None,
    });
    let mut app = usual_with(vec![dev.clone()], images.clone());
    // Not published: the VM's DNS name when banger serves one, and its address.
    let mut info = info();
    info.dns_domain = Some("vm".into());
    app.update(Msg::DaemonReady(info));
    assert!(contains(
        &app,
        100,
        30,
        "opencode dev.vm:4096 (172.30.0.2:4096)"
    ));
    assert!(contains(&app, 100, 30, "api dev.vm:3000 (172.30.0.2:3000)"));
    // sshd is not listed as a service: the detail has its own ssh line.
    assert!(!contains(&app, 100, 30, "ssh dev.vm:22"));
    insta::assert_snapshot!("vm_detail_image_services", screen(&app, 100, 30));

    // Published: the URL on the host.
    dev.published_ports = vec![banger_api::PublishedPort {
        address: "127.0.0.1".into(),
        host_port: 8080,
        guest_port: 4096,
    }];
    let app = usual_with(vec![dev], images);
    assert!(contains(&app, 100, 30, "opencode http://127.0.0.1:8080"));
    assert!(contains(&app, 100, 30, "api 172.30.0.2:3000"));
}

// ---- snapshots ----------------------------------------------------------------------------

fn snapshot(name: &str, vm: &str, memory_mib: u32, secs: i64) -> Snapshot {
    Snapshot {
        id: format!("{:0>16}", name.len()),
        name: name.into(),
        vm: banger_api::SnapshotOrigin {
            id: "5c3e0a1b2d4f6e8a".into(),
            name: vm.into(),
        },
        image: banger_api::ImageRef {
            id: "0a1b2c3d4e5f6a7b".into(),
            name: "debian".into(),
        },
        vcpus: 2,
        memory_mib,
        disk_bytes: 8 * GIB,
        work_disk_bytes: 8 * GIB,
        firecracker_version: "1.16.1".into(),
        cpu: "AuthenticAMD AMD EPYC 7B13".into(),
        size_bytes: u64::from(memory_mib) * MIB + 300 * MIB,
        created_at: ago(secs),
    }
}

fn snapshots() -> Vec<Snapshot> {
    vec![
        snapshot("before-upgrade", "web-1", 4096, 7_200),
        snapshot("web-1-20251123-101500", "web-1", 4096, 120),
    ]
}

#[test]
fn the_snapshots_view_lists_them_with_details() {
    let mut app = App::new(Theme::colored(), NOW);
    app.update(Msg::DaemonReady(info()));
    assert_eq!(app.snapshots, super::app::Load::Loading);
    let mut app = usual();
    app.update(Msg::Snapshots(Ok(snapshots())));
    press(&mut app, "3");
    assert_eq!(app.view, View::Snapshots);
    insta::assert_snapshot!("snapshots_list_100x30", screen(&app, 100, 30));
    press(&mut app, "j");
    assert_eq!(
        app.selected_snapshot().unwrap().name,
        "web-1-20251123-101500"
    );
    // Tab goes round the three views, Shift-Tab the other way.
    app.update(key(KeyCode::Tab));
    assert_eq!(app.view, View::Vms);
    app.update(key(KeyCode::BackTab));
    assert_eq!(app.view, View::Snapshots);
    app.update(Msg::Snapshots(Ok(Vec::new())));
    insta::assert_snapshot!("snapshots_empty", screen(&app, 80, 12));
    assert!(press(&mut app, "d").is_empty());
    assert!(app.update(key(KeyCode::Enter)).is_empty());
    assert_eq!(app.overlay, None, "nothing to restore or delete");
}

#[test]
fn n_snapshots_the_selected_vm_and_c_clones_it() {
    let mut app = usual();
    // web-1 runs: n asks the snapshot's name, which may stay empty for bangerd's default.
    assert!(press(&mut app, "jn").is_empty());
    insta::assert_snapshot!("snapshot_prompt", screen(&app, 80, 24));
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        vec![Effect::Snapshot("web-1".into(), None)]
    );
    assert!(contains(&app, 80, 24, "Taking the snapshot…"));
    let taken = snapshot("web-1-20251123-121000", "web-1", 4096, 0);
    let effects = app.update(Msg::Snapshotted("web-1".into(), Ok(taken)));
    assert_eq!(app.overlay, None);
    assert!(effects.contains(&Effect::LoadSnapshots), "{effects:?}");
    assert!(contains(
        &app,
        100,
        30,
        "Snapshot web-1-20251123-121000 of VM web-1 taken (4.3G on disk)."
    ));

    // dev is stopped: bangerd's refusal shows in the prompt, which stays to try again.
    press(&mut app, "kn");
    press(&mut app, "s1");
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        vec![Effect::Snapshot("dev".into(), Some("s1".into()))]
    );
    let stopped = ApiError::new(
        ErrorCode::InvalidState,
        r#"VM "dev" is stopped; only a running or paused VM can be snapshotted"#,
    )
    .with_hint("start it with `banger vm start dev`");
    app.update(Msg::Snapshotted("dev".into(), Err(stopped)));
    assert!(matches!(&app.overlay, Some(Overlay::Name(_))));
    assert!(contains(&app, 80, 24, "only a running or paused VM"));
    assert!(contains(&app, 80, 24, "hint: start it with"));
    app.update(key(KeyCode::Esc));

    // C clones web-1 into a new VM, whose start is followed like a create's.
    press(&mut app, "jC");
    assert!(
        app.update(key(KeyCode::Enter)).is_empty(),
        "a name is needed"
    );
    press(&mut app, "web-2");
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        vec![Effect::Clone("web-1".into(), "web-2".into())]
    );
    let mut clone = vm("web-2", "172.30.0.9", VmState::Starting);
    clone.vcpus = 4;
    let op = operation("op-c", OperationKind::StartVm, "web-2", "vmm");
    app.update(Msg::Created(Box::new(Ok(banger_api::CreatedVm {
        vm: clone,
        operation: Some(op.clone()),
    }))));
    assert_eq!(app.overlay, None);
    assert_eq!(app.operations, [op]);
    assert_eq!(app.selected_vm().unwrap().name, "web-2");
    // The images and snapshots views have no VM to snapshot or clone.
    press(&mut app, "2nC3nC");
    assert_eq!(app.overlay, None);
}

#[test]
fn the_snapshots_view_restores_and_deletes_the_selected_one() {
    let mut app = usual();
    app.update(Msg::Snapshots(Ok(snapshots())));
    press(&mut app, "3");
    // Enter: a new VM from the snapshot, named first.
    assert!(app.update(key(KeyCode::Enter)).is_empty());
    press(&mut app, "again");
    insta::assert_snapshot!("restore_prompt", screen(&app, 80, 24));
    let request = banger_api::CreateVmRequest {
        name: Some("again".into()),
        from_snapshot: Some("before-upgrade".into()),
        ..Default::default()
    };
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        vec![Effect::CreateVm(request)]
    );
    let refused = ApiError::new(
        ErrorCode::InvalidState,
        r#"snapshot "before-upgrade" was written by Firecracker 1.15.0; this host runs 1.16.1"#,
    );
    app.update(Msg::Created(Box::new(Err(refused))));
    assert!(contains(&app, 80, 24, "was written by Firecracker 1.15.0"));
    app.update(key(KeyCode::Esc));
    // VM keys do nothing here.
    assert!(press(&mut app, "xsp").is_empty());
    assert_eq!(app.overlay, None);

    // d asks first; y deletes.
    press(&mut app, "jd");
    assert_eq!(
        app.overlay,
        Some(Overlay::ConfirmSnapshotDelete(
            "web-1-20251123-101500".into()
        ))
    );
    insta::assert_snapshot!("snapshot_delete_confirm", screen(&app, 80, 24));
    assert!(press(&mut app, "n").is_empty());
    assert_eq!(app.overlay, None);
    press(&mut app, "d");
    assert_eq!(
        press(&mut app, "y"),
        vec![Effect::DeleteSnapshot("web-1-20251123-101500".into())]
    );
    let effects = app.update(Msg::SnapshotDeleted("web-1-20251123-101500".into(), Ok(())));
    assert!(effects.contains(&Effect::LoadSnapshots), "{effects:?}");
    assert!(contains(
        &app,
        100,
        30,
        "Deleted snapshot web-1-20251123-101500."
    ));
    // A refusal (a VM's first start still restores it) is said with its hint.
    press(&mut app, "dy");
    let in_use = ApiError::new(
        ErrorCode::InUse,
        r#"VM "again" starts from snapshot "web-1-20251123-101500": its first start restores it"#,
    )
    .with_hint("delete the snapshot once again's start is over");
    app.update(Msg::SnapshotDeleted(
        "web-1-20251123-101500".into(),
        Err(in_use),
    ));
    assert!(contains(
        &app,
        120,
        30,
        "Cannot delete snapshot web-1-20251123-101500: VM \"again\" starts from"
    ));
}
