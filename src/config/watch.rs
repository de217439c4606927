//! Noticing that the config file changed.
//!
//! The watch is on the file's *directory*, not the file: editors and `mv`
//! replace the file by renaming a new one over it (a watch on the old inode
//! would go deaf), and a Kubernetes ConfigMap mount updates by swapping the
//! `..data` symlink next to it, which never touches `cutover.toml` itself.
//! Any event in the directory is only a hint; the reload that follows reads
//! the file and compares its content with what is applied, so spurious
//! events cost one read and nothing else. Two kinds are not even hints:
//! reads, and writes to the content of another file in the directory. The
//! latter matters when an access log lives beside the config: its writer
//! appends many times a second, and each append would otherwise wake the
//! runtime and, as the writes never stop, reload the file every
//! [`MAX_DELAY`].
//!
//! A config that is a symlink is watched through both ends: its directory
//! and, when the target lies elsewhere, the target's directory too (as it
//! was at start); the names taken to be the config's follow the link
//! whenever a file is created, renamed or removed beside it, so that a
//! link pointed at another file is followed by writes to that file.
//!
//! Bursts are debounced: a reload fires once the directory has been quiet for
//! [`QUIET`], or [`MAX_DELAY`] after the first event of a burst if writes
//! never stop. A tool writing the file 100 times in a second thus causes one
//! reload, of the last content. If the OS watcher cannot be created or
//! reports an error, the watch falls back to polling the file's content.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::ModifyKind;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long the directory must be quiet before a reload fires.
pub const QUIET: Duration = Duration::from_millis(150);
/// Longest a reload waits behind a burst of writes that never stops.
pub const MAX_DELAY: Duration = Duration::from_secs(1);
/// How often the fallback poll reads the file.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// Watch `path` and call `reload` (debounced) whenever it may have changed,
/// until `stop` resolves. `reload` is also called every [`POLL_EVERY`] when
/// the OS watcher is unavailable; it must be cheap when nothing changed.
pub async fn watch<F>(path: PathBuf, mut reload: F, stop: impl std::future::Future<Output = ()>)
where
    F: FnMut() + Send,
{
    let (events_tx, events_rx) = mpsc::unbounded_channel::<()>();
    let watcher = start_watcher(&path, events_tx);
    tokio::pin!(stop);
    match watcher {
        Ok(_watcher) => {
            // A write between the startup read and the watch going live
            // would otherwise be missed until the next one.
            reload();
            tokio::select! {
                failed = debounce(events_rx, QUIET, MAX_DELAY, &mut reload) => {
                    if failed {
                        tracing::warn!(path = %path.display(), "config watcher failed; polling the file every {POLL_EVERY:?} instead");
                        tokio::select! {
                            _ = poll(&mut reload) => {}
                            _ = &mut stop => {}
                        }
                    }
                }
                _ = &mut stop => {}
            }
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot watch the config directory; polling the file every {POLL_EVERY:?} instead");
            tokio::select! {
                _ = poll(&mut reload) => {}
                _ = &mut stop => {}
            }
        }
    }
}

/// Start an OS watcher on the directory of `path`. Each event sends `()`; a
/// watcher error drops the sender, which the debouncer sees as failure.
fn start_watcher(path: &Path, events: mpsc::UnboundedSender<()>) -> notify::Result<notify::RecommendedWatcher> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let config = path.to_path_buf();
    let mut names = config_names(path);
    let mut sender = Some(events);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(event) if !may_change(&event, &names) => {}
        Ok(event) => {
            // A file created, renamed or removed may be the link itself,
            // pointed elsewhere: its target's name is read again.
            if !matches!(event.kind, EventKind::Modify(ModifyKind::Data(_))) {
                names = config_names(&config);
            }
            if let Some(tx) = &sender {
                let _ = tx.send(());
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "config watcher error");
            // Closing the channel tells the debouncer to fall back to polling.
            sender = None;
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    // A symlink to a file in another directory: writes to the target happen
    // there, and only a watch there hears them.
    let target_dir = std::fs::canonicalize(path).ok().and_then(|t| t.parent().map(Path::to_path_buf));
    if let Some(target_dir) = target_dir.filter(|t| std::fs::canonicalize(&dir).is_ok_and(|d| d != *t)) {
        if let Err(e) = watcher.watch(&target_dir, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %target_dir.display(), error = %e, "cannot watch the directory of the config's symlink target; edits there are read on SIGHUP or POST /reload");
        }
    }
    Ok(watcher)
}

/// The file names whose content is the config's: the path's own and, when
/// it is a symlink, its target's.
fn config_names(path: &Path) -> Vec<OsString> {
    let mut names: Vec<OsString> = path.file_name().map(OsString::from).into_iter().collect();
    if let Some(target) = std::fs::canonicalize(path).ok().and_then(|p| p.file_name().map(OsString::from)) {
        if !names.contains(&target) {
            names.push(target);
        }
    }
    names
}

/// Whether a directory event may mean the config changed. Reads (open,
/// close-without-write) change nothing — and the reload's own read of the
/// file would otherwise trigger the next reload. A write to the content of
/// another file cannot change the config's; creating, removing and renaming
/// files can (an editor renaming its copy over the file, a ConfigMap
/// swapping its `..data` link), and so can anything the OS does not name.
fn may_change(event: &notify::Event, names: &[OsString]) -> bool {
    match event.kind {
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Data(_)) => {
            event.paths.is_empty()
                || event.paths.iter().any(|p| p.file_name().is_some_and(|n| names.iter().any(|c| c == n)))
        }
        _ => true,
    }
}

/// Turn a stream of change hints into debounced `fire` calls. Returns `true`
/// when the event source failed (its channel closed).
pub async fn debounce<F: FnMut()>(
    mut events: mpsc::UnboundedReceiver<()>,
    quiet: Duration,
    max_delay: Duration,
    fire: &mut F,
) -> bool {
    loop {
        // Idle: wait for the first event of a burst.
        if events.recv().await.is_none() {
            return true;
        }
        let burst_started = Instant::now();
        let mut quiet_until = burst_started + quiet;
        loop {
            let deadline = quiet_until.min(burst_started + max_delay);
            tokio::select! {
                event = events.recv() => match event {
                    Some(()) => quiet_until = Instant::now() + quiet,
                    None => {
                        fire();
                        return true;
                    }
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        fire();
    }
}

async fn poll<F: FnMut()>(reload: &mut F) {
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        reload();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, CreateKind, DataChange, ModifyKind, RemoveKind, RenameMode};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn event(kind: EventKind, paths: &[&str]) -> notify::Event {
        paths.iter().fold(notify::Event::new(kind), |e, p| e.add_path(PathBuf::from(p)))
    }

    #[test]
    fn writes_to_another_file_beside_the_config_are_not_hints() {
        let names = config_names(Path::new("/etc/cutover/cutover.toml"));
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert!(!may_change(&event(write, &["/etc/cutover/access.log"]), &names), "an access log's append");
        assert!(may_change(&event(write, &["/etc/cutover/cutover.toml"]), &names));
        assert!(may_change(&event(write, &[]), &names), "a write the OS does not name");
        assert!(!may_change(&event(EventKind::Access(AccessKind::Any), &["/etc/cutover/cutover.toml"]), &names));
        for kind in [
            EventKind::Create(CreateKind::File),
            EventKind::Remove(RemoveKind::File),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Any,
        ] {
            assert!(may_change(&event(kind, &["/etc/cutover/..data"]), &names), "{kind:?} of another file");
        }
    }

    #[test]
    fn a_symlinked_config_is_known_by_its_target_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("real.toml"), "").expect("write");
        let link = dir.path().join("cutover.toml");
        std::os::unix::fs::symlink("real.toml", &link).expect("symlink");
        let names = config_names(&link);
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Content));
        assert!(may_change(&event(write, &[dir.path().join("real.toml").to_str().expect("utf-8")]), &names));
        assert!(may_change(&event(write, &[link.to_str().expect("utf-8")]), &names));
        assert!(!may_change(&event(write, &[dir.path().join("access.log").to_str().expect("utf-8")]), &names));
    }

    /// The next hint on `rx` within ten seconds, after the ones before it
    /// have settled: whether one came.
    async fn hint_after(rx: &mut mpsc::UnboundedReceiver<()>, act: impl FnOnce()) -> bool {
        while tokio::time::timeout(Duration::from_millis(300), rx.recv()).await.is_ok() {}
        act();
        tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.is_ok()
    }

    /// A config linked to a file in another directory hears writes to that
    /// file, and one whose link is pointed at another file hears writes to
    /// the new target.
    #[tokio::test]
    async fn a_symlinked_config_hears_its_target_wherever_it_is() {
        let (config_dir, elsewhere) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
        let target = elsewhere.path().join("real.toml");
        std::fs::write(&target, "a").expect("write");
        let link = config_dir.path().join("cutover.toml");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _watcher = start_watcher(&link, tx).expect("watcher");
        assert!(hint_after(&mut rx, || std::fs::write(&target, "b").expect("write")).await, "a write to the target");

        let (v1, v2) = (config_dir.path().join("v1.toml"), config_dir.path().join("v2.toml"));
        std::fs::write(&v1, "1").expect("write");
        std::fs::write(&v2, "2").expect("write");
        std::os::unix::fs::symlink("v1.toml", config_dir.path().join("next")).expect("symlink");
        assert!(hint_after(&mut rx, || std::fs::rename(config_dir.path().join("next"), &link).expect("rename")).await);
        std::os::unix::fs::symlink("v2.toml", config_dir.path().join("next")).expect("symlink");
        assert!(hint_after(&mut rx, || std::fs::rename(config_dir.path().join("next"), &link).expect("rename")).await);
        assert!(hint_after(&mut rx, || std::fs::write(&v2, "3").expect("write")).await, "a write to the new target");
    }

    async fn run_debounce(
        script: impl FnOnce(mpsc::UnboundedSender<()>) -> tokio::task::JoinHandle<()>,
    ) -> (Arc<AtomicUsize>, Vec<Duration>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let fired = Arc::new(AtomicUsize::new(0));
        let times = Arc::new(std::sync::Mutex::new(Vec::new()));
        let start = Instant::now();
        let (f, t) = (fired.clone(), times.clone());
        let debouncer = tokio::spawn(async move {
            let mut fire = || {
                f.fetch_add(1, Ordering::SeqCst);
                t.lock().unwrap().push(start.elapsed());
            };
            debounce(rx, QUIET, MAX_DELAY, &mut fire).await;
        });
        script(tx).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        debouncer.abort();
        let times = times.lock().unwrap().clone();
        (fired, times)
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_event_fires_once_after_the_quiet_period() {
        let (fired, times) = run_debounce(|tx| {
            tokio::spawn(async move {
                tx.send(()).unwrap();
                tokio::time::sleep(Duration::from_secs(3)).await;
            })
        })
        .await;
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        assert_eq!(times[0], QUIET);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_a_hundred_writes_in_a_second_fires_at_most_twice() {
        let (fired, times) = run_debounce(|tx| {
            tokio::spawn(async move {
                for _ in 0..100 {
                    tx.send(()).unwrap();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                tokio::time::sleep(Duration::from_secs(3)).await;
            })
        })
        .await;
        // At most one forced by MAX_DELAY mid-burst and one after it settles;
        // the last fire comes after the last write, so the last content applies.
        let n = fired.load(Ordering::SeqCst);
        assert!((1..=2).contains(&n), "{times:?}");
        assert!(times[0] >= MAX_DELAY.min(Duration::from_millis(990)), "{times:?}");
        assert!(*times.last().unwrap() >= Duration::from_millis(990), "{times:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn separate_bursts_fire_separately() {
        let (fired, _) = run_debounce(|tx| {
            tokio::spawn(async move {
                tx.send(()).unwrap();
                tx.send(()).unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
                tx.send(()).unwrap();
                tokio::time::sleep(Duration::from_secs(3)).await;
            })
        })
        .await;
        assert_eq!(fired.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_source_reports_failure() {
        let (tx, rx) = mpsc::unbounded_channel::<()>();
        drop(tx);
        let mut fire = || {};
        assert!(debounce(rx, QUIET, MAX_DELAY, &mut fire).await);
    }
}
