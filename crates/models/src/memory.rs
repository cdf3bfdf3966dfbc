//! Refusing a model that would not fit in memory before loading it, with the numbers, rather
//! than letting the kernel kill the server part way through a load (a version that fails to load
//! must never take the server down).
//!
//! The room is the smaller of Linux's `MemAvailable` and what the process's memory cgroup still
//! allows: in a container `MemAvailable` is the host's, while the cgroup's limit is what the
//! kernel's OOM killer enforces. Both cgroup versions count: v2 (`memory.max` less
//! `memory.current`) and v1 (`memory.limit_in_bytes` less `memory.usage_in_bytes`), at the
//! process's cgroup and every parent up to the hierarchy's mount, the one with the least room
//! left binding.

use std::path::{Path, PathBuf};

use aiserve_core::LoadError;

/// What is known about the memory a load can take.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Available {
    /// `MemAvailable` of `/proc/meminfo`, in bytes.
    pub system: Option<u64>,
    /// The cgroup limit with the least room left, where one is set.
    pub cgroup: Option<CgroupLimit>,
}

/// A memory cgroup's limit and use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLimit {
    /// The limit's file (`…/memory.max`; cgroup v1: `…/memory.limit_in_bytes`).
    pub file: PathBuf,
    /// The limit, in bytes.
    pub limit: u64,
    /// Bytes in use, less the inactive file cache (`memory.stat`'s `inactive_file`; v1:
    /// `total_inactive_file`), which the kernel drops before it kills anything.
    pub used: u64,
}

impl CgroupLimit {
    /// Bytes the cgroup can still take.
    pub fn room(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }
}

impl Available {
    /// The bytes a load can take: the smaller figure; `None` where neither is known.
    pub fn bytes(&self) -> Option<u64> {
        match (self.system, self.cgroup.as_ref().map(CgroupLimit::room)) {
            (Some(system), Some(cgroup)) => Some(system.min(cgroup)),
            (system, cgroup) => system.or(cgroup),
        }
    }

    /// Which figure binds, with the numbers of both.
    fn explain(&self) -> String {
        let system = match self.system {
            Some(m) => format!("MemAvailable is {} MB", m >> 20),
            None => "MemAvailable is unknown".to_string(),
        };
        match &self.cgroup {
            Some(c) if self.system.is_none_or(|m| c.room() <= m) => format!(
                "the cgroup's limit binds: {} is {} MB, {} MB of it in use; {system}",
                c.file.display(),
                c.limit >> 20,
                c.used >> 20
            ),
            Some(c) => format!(
                "{system}, which binds; the cgroup's limit ({}: {} MB, {} MB of it in use) leaves {} MB",
                c.file.display(),
                c.limit >> 20,
                c.used >> 20,
                c.room() >> 20
            ),
            None => format!("{system}, which binds; no cgroup memory limit is set"),
        }
    }
}

/// Memory this process can still be given: `MemAvailable` and its cgroup's limit (both `None`
/// where they cannot be read, e.g. off Linux).
pub fn available() -> Available {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    Available {
        system: read("/proc/meminfo").as_deref().and_then(mem_available),
        cgroup: read("/proc/self/cgroup").and_then(|cgroups| {
            cgroup_limit(&cgroups, &read("/proc/self/mountinfo").unwrap_or_default(), Path::new("/"))
        }),
    }
}

/// Refuses a load that takes `need` bytes when fewer are `available`; `why` (empty or a
/// parenthesis with a leading space) says what makes it big.
pub fn check(need: u64, available: Available, why: &str) -> Result<(), LoadError> {
    match available.bytes() {
        Some(bytes) if need > bytes => Err(LoadError::Weights(format!(
            "loading this model takes about {} MB{why}, more than the {} MB of memory available ({})",
            need >> 20,
            bytes >> 20,
            available.explain()
        ))),
        _ => Ok(()),
    }
}

/// `MemAvailable` of `/proc/meminfo`'s text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let kb = meminfo.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?.trim().strip_suffix("kB")?.trim();
    kb.parse::<u64>().ok().map(|kb| kb << 10)
}

/// The cgroup versions' file names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

impl Version {
    fn limit_file(self) -> &'static str {
        match self {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        }
    }

    fn usage_file(self) -> &'static str {
        match self {
            Version::V1 => "memory.usage_in_bytes",
            Version::V2 => "memory.current",
        }
    }

    /// `memory.stat`'s key for the inactive file cache of the cgroup and its children.
    fn inactive_file(self) -> &'static str {
        match self {
            Version::V1 => "total_inactive_file",
            Version::V2 => "inactive_file",
        }
    }
}

/// The tightest memory cgroup limit of the process whose `/proc/self/cgroup` and
/// `/proc/self/mountinfo` are given, its hierarchies' files read under `root` (`/`, or a test's
/// directory).
pub fn cgroup_limit(cgroups: &str, mountinfo: &str, root: &Path) -> Option<CgroupLimit> {
    let mounts = mounts(mountinfo);
    let mut limits = Vec::new();
    if let Some(path) = cgroup_path(cgroups, Version::V2) {
        let mount = mounts.iter().find(|m| m.fstype == "cgroup2");
        limits.extend(tightest(root, mount, "/sys/fs/cgroup", path, Version::V2));
    }
    if let Some(path) = cgroup_path(cgroups, Version::V1) {
        let memory = mounts.iter().find(|m| m.fstype == "cgroup" && m.options.split(',').any(|o| o == "memory"));
        limits.extend(tightest(root, memory, "/sys/fs/cgroup/memory", path, Version::V1));
    }
    limits.into_iter().min_by_key(CgroupLimit::room)
}

/// The process's cgroup path in `/proc/self/cgroup`'s text: the `0::` line's (v2), or that of
/// the hierarchy with the `memory` controller (v1).
fn cgroup_path(cgroups: &str, version: Version) -> Option<&str> {
    cgroups.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let wanted = match version {
            Version::V2 => id == "0" && controllers.is_empty(),
            Version::V1 => controllers.split(',').any(|c| c == "memory"),
        };
        wanted.then_some(path)
    })
}

/// A mount of `/proc/self/mountinfo`: the path of the filesystem it shows, where, its type and
/// its filesystem's options.
#[derive(Debug, PartialEq, Eq)]
struct Mount {
    root: String,
    point: String,
    fstype: String,
    options: String,
}

/// The mounts of `/proc/self/mountinfo`'s text (`id parent dev root point options [tags] -
/// fstype source super-options`).
fn mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let (fstype, _source, options) = (right.next()?, right.next()?, right.next().unwrap_or(""));
            Some(Mount {
                root: unescape(left.get(3)?),
                point: unescape(left.get(4)?),
                fstype: fstype.to_string(),
                options: options.to_string(),
            })
        })
        .collect()
}

/// A mountinfo path with its octal escapes (`\040` for a space) undone.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal.and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok()) {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The limit with the least room left at cgroup `path` and its parents up to the hierarchy's
/// mount (`mount`, else `default_point` showing the whole hierarchy), files read under `root`.
fn tightest(
    root: &Path,
    mount: Option<&Mount>,
    default_point: &str,
    path: &str,
    version: Version,
) -> Option<CgroupLimit> {
    let (mount_root, point) = mount.map_or(("/", default_point), |m| (m.root.as_str(), m.point.as_str()));
    let top = root.join(point.trim_start_matches('/'));
    // The mount shows the hierarchy from `mount_root` down (a container's cgroup namespace
    // shows its own cgroup as `/`).
    let below = Path::new(path).strip_prefix(mount_root).unwrap_or(Path::new(path.trim_start_matches('/')));
    let mut dir = top.join(below);
    let mut best: Option<CgroupLimit> = None;
    loop {
        if let Some(limit) = level(&dir, version) {
            if best.as_ref().is_none_or(|b| limit.room() < b.room()) {
                best = Some(limit);
            }
        }
        if dir == top || !dir.pop() {
            return best;
        }
    }
}

/// The limit set at cgroup directory `dir`, if any (no limit file, `max`, or v1's "unlimited":
/// none).
fn level(dir: &Path, version: Version) -> Option<CgroupLimit> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let file = dir.join(version.limit_file());
    let limit = parse_limit(&std::fs::read_to_string(&file).ok()?)?;
    let usage = read(version.usage_file()).and_then(|u| u.trim().parse::<u64>().ok()).unwrap_or(0);
    let inactive = read("memory.stat").and_then(|s| stat_value(&s, version.inactive_file())).unwrap_or(0);
    Some(CgroupLimit { file, limit, used: usage.saturating_sub(inactive) })
}

/// A limit file's bytes: `None` for no limit (`max`, or a value so large it stands for none, as
/// v1's default of `PAGE_COUNTER_MAX` pages does) or text that is not a number.
fn parse_limit(text: &str) -> Option<u64> {
    /// From 4 EiB up, a limit is no limit (v1 shows none as 2⁶³ less a page).
    const UNLIMITED: u64 = 1 << 62;
    text.trim().parse::<u64>().ok().filter(|&v| v < UNLIMITED)
}

/// The value of `key` in a `memory.stat` text (`key value` lines).
fn stat_value(stat: &str, key: &str) -> Option<u64> {
    stat.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn system(bytes: u64) -> Available {
        Available { system: Some(bytes), cgroup: None }
    }

    #[test]
    fn loads_larger_than_free_memory_are_refused_with_the_numbers() {
        let err = check(26 * GIB, system(24 * GIB), " (f32)").unwrap_err().to_string();
        assert!(err.contains("26624 MB (f32)") && err.contains("24576 MB"), "{err}");
        assert!(err.contains("MemAvailable is 24576 MB, which binds; no cgroup memory limit is set"), "{err}");
        assert!(check(20 * GIB, system(24 * GIB), "").is_ok());
        assert!(check(26 * GIB, Available::default(), "").is_ok());
    }

    #[test]
    fn the_tighter_of_mem_available_and_the_cgroup_binds_and_is_named() {
        let cgroup = CgroupLimit { file: "/sys/fs/cgroup/app/memory.max".into(), limit: 8 * GIB, used: 6 * GIB };
        // In a container: the host has 64 GiB free, the cgroup 2.
        let boxed = Available { system: Some(64 * GIB), cgroup: Some(cgroup.clone()) };
        assert_eq!(boxed.bytes(), Some(2 * GIB));
        let err = check(3 * GIB, boxed, "").unwrap_err().to_string();
        assert!(err.contains("more than the 2048 MB of memory available"), "{err}");
        assert!(
            err.contains("the cgroup's limit binds: /sys/fs/cgroup/app/memory.max is 8192 MB, 6144 MB of it in use")
                && err.contains("MemAvailable is 65536 MB"),
            "{err}"
        );
        // A generous cgroup on a busy host: MemAvailable binds.
        let busy = Available { system: Some(GIB), cgroup: Some(cgroup.clone()) };
        let err = check(3 * GIB, busy, "").unwrap_err().to_string();
        assert!(err.contains("more than the 1024 MB") && err.contains("MemAvailable is 1024 MB, which binds"), "{err}");
        assert!(err.contains("leaves 2048 MB"), "{err}");
        // The cgroup alone.
        let alone = Available { system: None, cgroup: Some(cgroup) };
        assert!(check(3 * GIB, alone, "").unwrap_err().to_string().contains("MemAvailable is unknown"));
        // Over the limit already: no room, not an overflow.
        let full = CgroupLimit { file: "m".into(), limit: GIB, used: 2 * GIB };
        assert_eq!(full.room(), 0);
    }

    #[test]
    fn mem_available_is_read_in_bytes() {
        let info = "MemTotal:       32768000 kB\nMemFree:         1000 kB\nMemAvailable:   24576000 kB\n";
        assert_eq!(mem_available(info), Some(24576000 << 10));
        assert_eq!(mem_available("MemTotal: 5 kB\n"), None);
        // This machine's, as a smoke test of the path (cgroups are left out: no test reads the
        // host's).
        let real = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        assert!(real.is_empty() || mem_available(&real).is_some_and(|m| m > 0));
    }

    #[test]
    fn proc_self_cgroup_gives_each_versions_path() {
        let v2 = "0::/user.slice/user-1000.slice/session-2.scope\n";
        assert_eq!(cgroup_path(v2, Version::V2), Some("/user.slice/user-1000.slice/session-2.scope"));
        assert_eq!(cgroup_path(v2, Version::V1), None);
        let v1 = "12:pids:/docker/abc\n11:cpu,cpuacct:/docker/abc\n9:memory:/docker/abc\n0::/docker/abc\n";
        assert_eq!(cgroup_path(v1, Version::V1), Some("/docker/abc"));
        assert_eq!(cgroup_path(v1, Version::V2), Some("/docker/abc"));
        assert_eq!(cgroup_path("3:rdma:/\n", Version::V1), None);
        // A path may hold colons.
        assert_eq!(cgroup_path("0::/a:b\n", Version::V2), Some("/a:b"));
    }

    #[test]
    fn limits_parse_with_max_and_huge_values_as_none() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("8589934592\n"), Some(8 * GIB));
        assert_eq!(parse_limit(""), None);
        let stat = "anon 100\nfile 5000\nactive_file 1000\ninactive_file 4000\ntotal_inactive_file 7\n";
        assert_eq!(stat_value(stat, "inactive_file"), Some(4000));
        assert_eq!(stat_value(stat, "total_inactive_file"), Some(7));
        assert_eq!(stat_value(stat, "inactive_anon"), None);
    }

    #[test]
    fn mountinfo_gives_cgroup_mounts_with_escapes_undone() {
        let info = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
41 30 0:35 /docker/abc /sys/fs/cgroup/memory\\040x rw,nosuid master:9 - cgroup cgroup rw,memory
";
        let m = mounts(info);
        assert_eq!(m.len(), 3);
        assert_eq!((m[1].root.as_str(), m[1].point.as_str(), m[1].fstype.as_str()), ("/", "/sys/fs/cgroup", "cgroup2"));
        assert_eq!(m[2].point, "/sys/fs/cgroup/memory x");
        assert_eq!((m[2].root.as_str(), m[2].options.as_str()), ("/docker/abc", "rw,memory"));
        assert_eq!(unescape("a\\134b\\04"), "a\\b\\04");
    }

    /// Writes `files` (path under `root`, contents) into a new directory.
    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    const V2_MOUNT: &str = "30 22 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";

    #[test]
    fn cgroup_v2_takes_the_tightest_limit_on_the_way_up() {
        let gib = |n: u64| format!("{}\n", n * GIB);
        let root = tree(&[
            // The process's own cgroup: no limit of its own.
            ("sys/fs/cgroup/kubepods/pod1/app/memory.max", "max\n"),
            ("sys/fs/cgroup/kubepods/pod1/app/memory.current", &gib(1)),
            // The pod: 4 GiB, 3 in use, 512 MiB of it inactive file cache.
            ("sys/fs/cgroup/kubepods/pod1/memory.max", &gib(4)),
            ("sys/fs/cgroup/kubepods/pod1/memory.current", &gib(3)),
            ("sys/fs/cgroup/kubepods/pod1/memory.stat", &format!("anon 1\ninactive_file {}\n", 512 * MIB)),
            // All pods: 100 GiB, 50 in use (more room, so not the binding one).
            ("sys/fs/cgroup/kubepods/memory.max", &gib(100)),
            ("sys/fs/cgroup/kubepods/memory.current", &gib(50)),
        ]);
        let limit = cgroup_limit("0::/kubepods/pod1/app\n", V2_MOUNT, root.path()).unwrap();
        assert_eq!(limit.file, root.path().join("sys/fs/cgroup/kubepods/pod1/memory.max"));
        assert_eq!((limit.limit, limit.used, limit.room()), (4 * GIB, 3 * GIB - 512 * MIB, GIB + 512 * MIB));
        // Without mountinfo, the usual mount point; with no limit anywhere, none.
        assert_eq!(cgroup_limit("0::/kubepods/pod1/app\n", "", root.path()), Some(limit));
        assert_eq!(cgroup_limit("0::/elsewhere\n", V2_MOUNT, root.path()), None);
        let unlimited = tree(&[("sys/fs/cgroup/a/memory.max", "max\n"), ("sys/fs/cgroup/a/memory.current", "5\n")]);
        assert_eq!(cgroup_limit("0::/a\n", V2_MOUNT, unlimited.path()), None);
    }

    #[test]
    fn cgroup_v2_in_a_namespace_reads_the_mounts_own_limit() {
        // A container with its own cgroup namespace sees its cgroup as `/`, mounted whole.
        let root =
            tree(&[("sys/fs/cgroup/memory.max", "2147483648\n"), ("sys/fs/cgroup/memory.current", "1073741824\n")]);
        let limit = cgroup_limit("0::/\n", V2_MOUNT, root.path()).unwrap();
        assert_eq!((limit.limit, limit.room()), (2 * GIB, GIB));
        // Nothing above the mount point is read.
        let above = tree(&[("sys/fs/memory.max", "1\n"), ("sys/fs/cgroup/x/memory.max", "max\n")]);
        assert_eq!(cgroup_limit("0::/x\n", V2_MOUNT, above.path()), None);
    }

    #[test]
    fn cgroup_v1_reads_the_memory_controllers_mount() {
        let mountinfo = "\
30 22 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
35 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
36 30 0:31 /docker /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
37 30 0:32 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
        let cgroups = "11:cpu,cpuacct:/docker/abc\n9:memory:/docker/abc\n0::/docker/abc\n";
        let root = tree(&[
            // The mount's root is `/docker`: the container's cgroup is `abc` under the mount.
            ("sys/fs/cgroup/memory/abc/memory.limit_in_bytes", "1073741824\n"),
            ("sys/fs/cgroup/memory/abc/memory.usage_in_bytes", "805306368\n"),
            ("sys/fs/cgroup/memory/abc/memory.stat", "cache 1\ninactive_file 999\ntotal_inactive_file 268435456\n"),
            ("sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n"),
            ("sys/fs/cgroup/memory/memory.usage_in_bytes", "5\n"),
            // The v2 hierarchy of a hybrid setup has no memory controller: no files.
        ]);
        let limit = cgroup_limit(cgroups, mountinfo, root.path()).unwrap();
        assert_eq!(limit.file, root.path().join("sys/fs/cgroup/memory/abc/memory.limit_in_bytes"));
        assert_eq!((limit.limit, limit.used, limit.room()), (GIB, 512 * MIB, 512 * MIB));
        // v1's "unlimited" everywhere: none.
        let unlimited = tree(&[("sys/fs/cgroup/memory/abc/memory.limit_in_bytes", "9223372036854771712\n")]);
        assert_eq!(cgroup_limit(cgroups, mountinfo, unlimited.path()), None);
    }

    #[test]
    fn with_both_versions_the_tighter_binds() {
        let mountinfo = "\
36 30 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
37 30 0:32 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
        let root = tree(&[
            ("sys/fs/cgroup/memory/s/memory.limit_in_bytes", &format!("{}", 4 * GIB)),
            ("sys/fs/cgroup/unified/s/memory.max", &format!("{}", 2 * GIB)),
        ]);
        let limit = cgroup_limit("9:memory:/s\n0::/s\n", mountinfo, root.path()).unwrap();
        assert_eq!((limit.room(), limit.file), (2 * GIB, root.path().join("sys/fs/cgroup/unified/s/memory.max")));
    }
}
