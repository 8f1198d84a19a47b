//! `fs-stats` capability: capacity of the granted, real filesystems, from the mount table and
//! `statvfs(3)`. No `df` process is spawned.
//!
//! Shape: [`FsStatsGrantConfig`] → [`FsStatsGrant`] → [`FsStatsCtx`] → `fs_stats::Host`,
//! registered as [`FsStats`].
//! Mount points the operator did not grant are never passed to `statvfs`, so the plugin cannot
//! even learn their size. The mount table and `statvfs` run in the plugin's blocking lane,
//! except on the path [`FsStatsCtx::with_proc_root`] describes: the agent's own mount table
//! below a held, verified /proc fd, and `statvfs` of mounts reached only through
//! [`NEVER_WAIT_FS`] filesystems, on the calling thread.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use globset::{GlobSet, GlobSetBuilder};
use serde::Deserialize;
use wasmtime::component::{HasSelf, Linker};

use super::audit::Audit;
use super::bindings::{Error, pganalytics::collector::fs_stats};
use super::blocking::{BlockingLane, BlockingLanes};
use super::capability::{GrantProblem, HostCapability};
use super::fsio;
use super::procfs::{
    PatternError, ProcRoot, ReadError, component_glob, read_capped, read_open_capped,
};
use super::run::RunInfo;

/// The kernel's mount table of this process.
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// The `fs-stats` interface.
pub struct FsStats;

impl HostCapability for FsStats {
    const NAME: &'static str = "fs-stats";
    const SUMMARY: &'static str = "filesystem capacity of mount points";
    const GRANT_EXAMPLE: Option<&'static str> = Some("mounts = [\"/\", \"/var/lib/postgresql\"]");

    type Setup = ();
    type GrantConfig = FsStatsGrantConfig;
    type Grant = FsStatsGrant;
    type GrantError = FsStatsGrantError;
    type Shared = FsStatsShared;
    type Ctx = FsStatsCtx;
    type Pending = ();

    fn grant(config: &FsStatsGrantConfig) -> Result<FsStatsGrant, FsStatsGrantError> {
        FsStatsGrant::new(config)
    }

    fn shared(_: &(), _: Option<&Path>) -> FsStatsShared {
        FsStatsShared {
            proc: Arc::new(ProcRoot::new(PathBuf::from(PROC_ROOT))),
            lanes: BlockingLanes::default(),
        }
    }

    fn context(
        grant: Option<Arc<FsStatsGrant>>,
        shared: &FsStatsShared,
        run: &RunInfo,
    ) -> FsStatsCtx {
        FsStatsCtx::new(
            grant,
            PathBuf::from(MOUNTINFO),
            run.audit.clone(),
            shared.lanes.lane(Self::NAME, &run.plugin, run.deadline),
        )
        .with_proc_root(shared.proc.clone())
    }

    fn add_to_linker<T: Send + 'static>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> &mut FsStatsCtx,
    ) -> wasmtime::Result<()> {
        fs_stats::add_to_linker::<T, HasSelf<FsStatsCtx>>(linker, get)
    }
}

/// What every run shares: /proc, held open once it is known to be a real procfs (the mount
/// table is then read below it on the calling thread), and the plugins' blocking lanes.
#[derive(Clone)]
pub struct FsStatsShared {
    proc: Arc<ProcRoot>,
    lanes: BlockingLanes,
}

/// Where the kernel's process filesystem is mounted.
const PROC_ROOT: &str = "/proc";

/// Threat: a mount table of millions of entries (a mount storm) held in memory at once.
const MAX_MOUNTINFO_BYTES: usize = 16 << 20;

/// Filesystems whose `statfs` the kernel answers from counters it keeps in memory (ext4's
/// per-cpu free-block counters, xfs's in-core superblock): no I/O, no wait on a lock held
/// across I/O, no server. A call is made on the calling thread only when every mount on the
/// way to each selected mount point (`/`, and every mount at a leading part of its path,
/// shadowed ones included) is one of these; anything else (network, FUSE, autofs, overlay,
/// btrfs) sends the `statvfs` calls to the blocking lane.
const NEVER_WAIT_FS: &[&str] = &["ext2", "ext3", "ext4", "xfs"];

/// `[plugins.NAME.grants.fs-stats]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsStatsGrantConfig {
    /// Mount points the plugin may see: exact (`/`, `/var/lib/postgresql`), globs where `*` stays
    /// within one path component (`/mnt/*`), `/data/**` for a subtree, or `"*"` for every mount.
    pub mounts: Vec<String>,
}

/// The validated grant: the mount points a plugin may see.
#[derive(Debug, Clone)]
pub struct FsStatsGrant {
    all: bool,
    set: GlobSet,
}

/// Why a `[plugins.NAME.grants.fs-stats]` table is invalid.
#[derive(Debug, thiserror::Error)]
pub enum FsStatsGrantError {
    #[error("mount `{0}` must be an absolute path or \"*\"")]
    NotAbsolute(String),
    #[error("mount `{0}` must not contain `..`")]
    DotDot(String),
    #[error(transparent)]
    Pattern(#[from] PatternError),
    #[error("{0}")]
    Set(globset::Error),
}

impl GrantProblem for FsStatsGrantError {
    fn key(&self) -> &'static str {
        "mounts"
    }
}

impl FsStatsGrant {
    pub fn new(config: &FsStatsGrantConfig) -> Result<Self, FsStatsGrantError> {
        let mut all = false;
        let mut builder = GlobSetBuilder::new();
        for pattern in &config.mounts {
            if pattern == "*" {
                all = true;
                continue;
            }
            if !pattern.starts_with('/') {
                return Err(FsStatsGrantError::NotAbsolute(pattern.clone()));
            }
            if pattern.split('/').any(|c| c == "..") {
                return Err(FsStatsGrantError::DotDot(pattern.clone()));
            }
            builder.add(component_glob(pattern)?);
        }
        let set = builder.build().map_err(FsStatsGrantError::Set)?;
        Ok(Self { all, set })
    }

    pub fn allows(&self, mount_point: &str) -> bool {
        self.all || self.set.is_match(mount_point)
    }
}

/// Filesystem types that describe kernel state, not storage: their sizes are meaningless for
/// capacity planning (df and Telegraf's disk input hide them too).
const PSEUDO_FS_TYPES: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

/// One line of /proc/self/mountinfo, the fields this capability needs.
#[derive(Debug, Clone, PartialEq)]
pub struct MountEntry {
    pub device: String,
    pub mount_point: String,
    pub fs_type: String,
    pub read_only: bool,
}

/// Parses mountinfo (proc(5)): `id parent major:minor root mount-point options ... - type source
/// super-options`. Octal escapes (`\040` for a space) are decoded.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 6 || right.len() < 2 {
            continue;
        }
        entries.push(MountEntry {
            mount_point: unescape_octal(left[4]),
            read_only: left[5].split(',').any(|o| o == "ro"),
            fs_type: right[0].to_owned(),
            device: unescape_octal(right[1]),
        });
    }
    entries
}

fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts worth reporting: real filesystems, the last mount on each mount point (an
/// over-mount hides what is below it), and nothing the grant does not cover.
pub fn select_mounts(entries: &[MountEntry], grant: &FsStatsGrant) -> Vec<MountEntry> {
    let mut selected: Vec<MountEntry> = Vec::new();
    for entry in entries {
        if PSEUDO_FS_TYPES.contains(&entry.fs_type.as_str()) || entry.fs_type.starts_with("fuse.") {
            continue;
        }
        if !grant.allows(&entry.mount_point) {
            continue;
        }
        selected.retain(|e| e.mount_point != entry.mount_point);
        selected.push(entry.clone());
    }
    selected
}

/// Whether reaching `target` by its path can only pass through [`NEVER_WAIT_FS`] mounts: every
/// mount at `/`, at a leading part of the path or at the path itself (a shadowed one too, so
/// the answer never depends on which of several mounts at a path is visible) is one of them.
fn walk_never_waits(entries: &[MountEntry], target: &str) -> bool {
    entries
        .iter()
        .filter(|e| is_on_the_way(&e.mount_point, target))
        .all(|e| NEVER_WAIT_FS.contains(&e.fs_type.as_str()))
}

/// Whether the directory `dir` is `path`, `/`, or a leading part of `path`.
fn is_on_the_way(dir: &str, path: &str) -> bool {
    dir == "/"
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// statvfs of each mount, keeping those that answer and have a size.
fn statvfs_all(mounts: &[MountEntry]) -> Vec<fs_stats::Filesystem> {
    mounts
        .iter()
        .filter_map(|mount| statvfs(mount).ok())
        .filter(|fs| fs.total_bytes > 0)
        .collect()
}

/// The agent's own mount table, read below the held /proc fd without following any link.
fn read_own_mountinfo(proc: &OwnedFd) -> Result<String, Error> {
    let relative = format!("{}/mountinfo", std::process::id());
    fsio::open_beneath(proc, &relative)
        .map_err(ReadError::from_open)
        .and_then(|mut file| read_open_capped(&mut file, MAX_MOUNTINFO_BYTES))
        .map_err(|e| e.with_resource("mount table"))
}

/// Per-run state of the `fs-stats` capability.
pub struct FsStatsCtx {
    grant: Option<Arc<FsStatsGrant>>,
    mountinfo: PathBuf,
    /// /proc, when `mountinfo` is the agent's own mount table below it (production).
    proc: Option<Arc<ProcRoot>>,
    audit: Audit,
    lane: BlockingLane,
}

impl FsStatsCtx {
    /// `mountinfo` is `/proc/self/mountinfo` in production; the mount table and `statvfs` are
    /// read in `lane`, under its deadline (see [`FsStatsCtx::with_proc_root`] for the
    /// exception).
    pub fn new(
        grant: Option<Arc<FsStatsGrant>>,
        mountinfo: PathBuf,
        audit: Audit,
        lane: BlockingLane,
    ) -> Self {
        Self {
            grant,
            mountinfo,
            proc: None,
            audit,
            lane,
        }
    }

    /// Lets the call skip the lane: once `proc` is open (in the lane, on the first call) and a
    /// real procfs, the mount table is read below it on the calling thread, like procfs's
    /// never-wait files; and when every mount on the way to each selected mount point is a
    /// [`NEVER_WAIT_FS`], the `statvfs` calls are made there too. Otherwise they go to the
    /// lane as before.
    pub fn with_proc_root(mut self, proc: Arc<ProcRoot>) -> Self {
        self.proc = Some(proc);
        self
    }

    pub async fn filesystems_checked(&self) -> Result<Vec<fs_stats::Filesystem>, Error> {
        let Some(grant) = self.grant.clone() else {
            return Err(self
                .audit
                .deny("fs-stats", "filesystems", "no mounts are granted"));
        };
        if let Some(root) = self.proc.as_deref().and_then(ProcRoot::opened_procfs) {
            let entries = parse_mountinfo(&read_own_mountinfo(root)?);
            let selected = select_mounts(&entries, &grant);
            if selected
                .iter()
                .all(|mount| walk_never_waits(&entries, &mount.mount_point))
            {
                return Ok(statvfs_all(&selected));
            }
            return self
                .lane
                .run("filesystems", move || Ok(statvfs_all(&selected)))
                .await;
        }
        let (mountinfo, proc) = (self.mountinfo.clone(), self.proc.clone());
        // statvfs can block for a long time on a dead network mount, and reading the mount
        // table is a syscall too: both run in the blocking lane, where the plugin's deadline
        // cuts the whole call short and a stuck thread is accounted to this plugin.
        self.lane
            .run("filesystems", move || {
                if let Some(proc) = proc {
                    // Opened here, so that later calls find it open; a failure only means
                    // they keep coming to the lane.
                    let _ = proc.open();
                }
                let text = read_capped(&mountinfo, MAX_MOUNTINFO_BYTES)
                    .map_err(|e| e.with_resource("mount table"))?;
                Ok(statvfs_all(&select_mounts(&parse_mountinfo(&text), &grant)))
            })
            .await
    }
}

/// statvfs(3) of one mount as the capability reports it (also the native baseline of the
/// benchmark suite).
pub fn statvfs(mount: &MountEntry) -> std::io::Result<fs_stats::Filesystem> {
    let path = CString::new(
        std::path::Path::new(&mount.mount_point)
            .as_os_str()
            .as_bytes(),
    )
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `stat` a writable statvfs struct.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = stat.f_frsize as u64;
    Ok(fs_stats::Filesystem {
        device: mount.device.clone(),
        mount_point: mount.mount_point.clone(),
        fs_type: mount.fs_type.clone(),
        total_bytes: stat.f_blocks as u64 * frsize,
        free_bytes: stat.f_bfree as u64 * frsize,
        available_bytes: stat.f_bavail as u64 * frsize,
        total_inodes: stat.f_files as u64,
        free_inodes: stat.f_ffree as u64,
        read_only: mount.read_only,
    })
}

impl fs_stats::Host for FsStatsCtx {
    async fn filesystems(&mut self) -> Result<Vec<fs_stats::Filesystem>, Error> {
        self.filesystems_checked().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
23 22 0:21 / /proc rw,nosuid - proc proc rw
24 22 0:5 / /dev rw,nosuid - devtmpfs udev rw
25 22 252:2 / /var/lib/postgresql rw,relatime - xfs /dev/vdb1 rw
26 22 252:3 / /mnt/my\\040disk ro,relatime - ext4 /dev/vdc1 ro
27 22 0:30 / /run tmpfs rw - tmpfs tmpfs rw
28 25 252:4 / /var/lib/postgresql rw - ext4 /dev/vdd1 rw
";

    fn grant(mounts: &[&str]) -> FsStatsGrant {
        FsStatsGrant::new(&FsStatsGrantConfig {
            mounts: mounts.iter().map(|m| m.to_string()).collect(),
        })
        .unwrap()
    }

    #[test]
    fn mountinfo_is_parsed_with_escapes_and_ro_flag() {
        let entries = parse_mountinfo(SAMPLE);
        assert_eq!(entries.len(), 7);
        assert_eq!(entries[4].mount_point, "/mnt/my disk");
        assert!(entries[4].read_only);
        assert_eq!(entries[0].device, "/dev/vda1");
    }

    #[test]
    fn pseudo_filesystems_are_filtered_and_overmounts_win() {
        let all = select_mounts(&parse_mountinfo(SAMPLE), &grant(&["*"]));
        let points: Vec<_> = all.iter().map(|m| m.mount_point.as_str()).collect();
        assert_eq!(points, ["/", "/mnt/my disk", "/var/lib/postgresql"]);
        assert_eq!(all[2].device, "/dev/vdd1");
    }

    #[test]
    fn only_granted_mounts_are_selected() {
        let some = select_mounts(&parse_mountinfo(SAMPLE), &grant(&["/var/*"]));
        assert!(some.is_empty(), "`*` must not cross `/`: {some:?}");
        let some = select_mounts(&parse_mountinfo(SAMPLE), &grant(&["/var/lib/**", "/"]));
        let points: Vec<_> = some.iter().map(|m| m.mount_point.as_str()).collect();
        assert_eq!(points, ["/", "/var/lib/postgresql"]);
        let none = select_mounts(&parse_mountinfo(SAMPLE), &grant(&["/srv"]));
        assert!(none.is_empty());
    }

    #[test]
    fn relative_or_dotdot_mount_grants_are_rejected() {
        assert!(
            FsStatsGrant::new(&FsStatsGrantConfig {
                mounts: vec!["var".into()]
            })
            .is_err()
        );
        assert!(
            FsStatsGrant::new(&FsStatsGrantConfig {
                mounts: vec!["/a/../b".into()]
            })
            .is_err()
        );
    }

    #[tokio::test]
    async fn real_root_filesystem_matches_statvfs() {
        let ctx = FsStatsCtx::new(
            Some(Arc::new(grant(&["/"]))),
            "/proc/self/mountinfo".into(),
            Audit::new("t".into(), "d".into()),
            BlockingLane::standalone(
                "fs-stats",
                "t",
                std::time::Instant::now() + std::time::Duration::from_secs(30),
            ),
        );
        let filesystems = ctx.filesystems_checked().await.unwrap();
        // The root may be a pseudo filesystem (overlay is kept; tmpfs roots are not).
        for fs in &filesystems {
            assert_eq!(fs.mount_point, "/");
            assert!(fs.total_bytes >= fs.free_bytes && fs.free_bytes >= fs.available_bytes);
        }
    }

    #[test]
    fn statvfs_skips_the_lane_only_when_every_mount_on_the_way_never_waits() {
        let entries = parse_mountinfo(SAMPLE);
        // ext4 `/`, xfs and its ext4 overmount at /var/lib/postgresql, ext4 with a space.
        for local in [
            "/",
            "/var/lib/postgresql",
            "/mnt/my disk",
            "/var/lib/postgresql/x",
        ] {
            assert!(walk_never_waits(&entries, local), "{local}");
        }
        let more = format!(
            "{SAMPLE}30 22 0:40 / /mnt/nfs rw - nfs4 server:/export rw\n\
             31 30 252:5 / /mnt/nfs/local rw - ext4 /dev/vde1 rw\n\
             32 22 0:41 / /srv rw - autofs systemd-1 rw\n\
             33 32 252:6 / /srv/data rw - xfs /dev/vdf1 rw\n\
             34 22 0:42 / /fuse rw - fuse.sshfs host:/ rw\n\
             35 22 0:43 / /var/lib/postgresql2 rw - btrfs /dev/vdg1 rw\n"
        );
        let entries = parse_mountinfo(&more);
        // A local filesystem below a network, automount or FUSE mount, or one that is not on
        // the list, goes to the lane; a sibling whose name merely starts the same does not
        // count as on the way.
        for waits in [
            "/mnt/nfs",
            "/mnt/nfs/local",
            "/srv/data",
            "/fuse",
            "/var/lib/postgresql2",
        ] {
            assert!(!walk_never_waits(&entries, waits), "{waits}");
        }
        assert!(walk_never_waits(&entries, "/var/lib/postgresql"));
        assert!(walk_never_waits(&entries, "/mnt/my disk"));
        // A root that is not on the list (overlay in a container) sends everything to the lane.
        let overlay = SAMPLE.replacen("- ext4 /dev/vda1", "- overlay overlay", 1);
        assert!(!walk_never_waits(
            &parse_mountinfo(&overlay),
            "/var/lib/postgresql"
        ));
    }

    #[tokio::test]
    async fn the_held_proc_root_gives_the_same_answer_as_the_lane() {
        let lane = || {
            BlockingLane::standalone(
                "fs-stats",
                "t",
                std::time::Instant::now() + std::time::Duration::from_secs(30),
            )
        };
        let ctx = |proc: Option<Arc<ProcRoot>>| {
            let ctx = FsStatsCtx::new(
                Some(Arc::new(grant(&["*"]))),
                MOUNTINFO.into(),
                Audit::new("t".into(), "d".into()),
                lane(),
            );
            match proc {
                Some(proc) => ctx.with_proc_root(proc),
                None => ctx,
            }
        };
        let proc = Arc::new(ProcRoot::new(PROC_ROOT.into()));
        let points = |filesystems: Vec<fs_stats::Filesystem>| {
            filesystems
                .into_iter()
                .map(|fs| (fs.device, fs.mount_point, fs.fs_type))
                .collect::<Vec<_>>()
        };
        let through_lane = points(ctx(None).filesystems_checked().await.unwrap());
        // The first call opens /proc in the lane; the second reads the table below it.
        let first = points(ctx(Some(proc.clone())).filesystems_checked().await.unwrap());
        assert!(proc.opened_procfs().is_some());
        let second = points(ctx(Some(proc)).filesystems_checked().await.unwrap());
        assert_eq!(first, through_lane);
        assert_eq!(second, through_lane);
        // The grant still decides: nothing granted matches, nothing is reported.
        let none = FsStatsCtx::new(
            Some(Arc::new(grant(&["/no/such/mount"]))),
            MOUNTINFO.into(),
            Audit::new("t".into(), "d".into()),
            lane(),
        )
        .with_proc_root(Arc::new(ProcRoot::new(PROC_ROOT.into())));
        assert!(none.filesystems_checked().await.unwrap().is_empty());
        assert!(none.filesystems_checked().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn no_grant_is_a_denial() {
        let ctx = FsStatsCtx::new(
            None,
            "/proc/self/mountinfo".into(),
            Audit::new("t".into(), "d".into()),
            BlockingLane::standalone(
                "fs-stats",
                "t",
                std::time::Instant::now() + std::time::Duration::from_secs(30),
            ),
        );
        assert!(matches!(
            ctx.filesystems_checked().await,
            Err(Error::Denied(_))
        ));
    }
}
