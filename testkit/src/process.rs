//! A binary under test, watched from outside: every line it writes to stdout and stderr is
//! counted and kept, and its CPU time is read from `/proc/<pid>/stat`.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` times: the kernel reports them in USER_HZ
/// (`fs/proc/array.c`, `nsec_to_clock_t`), which is 100 on x86 and arm64 (`sysconf(_SC_CLK_TCK)`).
const USER_HZ: u64 = 100;

/// A running child process with its output collected.
pub struct Watched {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watched {
    /// Spawns `cmd` with stdout and stderr captured.
    pub fn spawn(mut cmd: Command) -> std::io::Result<Self> {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let readers: Vec<Box<dyn Read + Send>> = [
            child.stdout.take().map(|o| Box::new(o) as Box<dyn Read + Send>),
            child.stderr.take().map(|e| Box::new(e) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .collect();
        for r in readers {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        Ok(Self { child, lines })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every output line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// User + system CPU time used so far (fields 14 and 15 of `/proc/<pid>/stat`).
    fn cpu_time(&self) -> std::io::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // The command name (field 2) may hold spaces: count fields after its closing ')'.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| -> std::io::Result<u64> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| std::io::Error::other(format!("unexpected /proc stat: {stat}")))
        };
        // After ')' the first field is field 3 (state): utime is field 14, stime field 15.
        let total = ticks(11)? + ticks(12)?;
        Ok(Duration::from_secs_f64(total as f64 / USER_HZ as f64))
    }

    /// Watches the process for `window`: the lines it wrote and the share of one core it used
    /// meanwhile (CPU time / wall time).
    pub async fn observe(&mut self, window: Duration) -> Observation {
        let lines_before = self.lines().len();
        let cpu0 = self.cpu_time().unwrap_or_default();
        let start = std::time::Instant::now();
        // The observation window itself, not a wait for a condition.
        tokio::time::sleep(window).await;
        let cpu = self.cpu_time().unwrap_or_default().saturating_sub(cpu0);
        let wall = start.elapsed();
        let lines = self.lines();
        Observation {
            new_lines: lines.len() - lines_before,
            lines,
            cpu,
            wall,
            exited: self.exited(),
        }
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What [`Watched::observe`] saw.
#[derive(Debug, Clone)]
pub struct Observation {
    /// Every line so far.
    pub lines: Vec<String>,
    /// Lines written during the window.
    pub new_lines: usize,
    pub cpu: Duration,
    pub wall: Duration,
    pub exited: bool,
}

impl Observation {
    /// Share of one core used during the window.
    pub fn cpu_share(&self) -> f64 {
        self.cpu.as_secs_f64() / self.wall.as_secs_f64().max(f64::EPSILON)
    }

    /// Panics unless the process ran through the window writing at most `max_lines` lines in all
    /// and using less than `max_share` of a core.
    pub fn assert_quiet(&self, what: &str, max_lines: usize, max_share: f64) {
        println!(
            "{what}: {:?}: {} log lines, CPU {:?} ({:.2} % of a core)",
            self.wall,
            self.lines.len(),
            self.cpu,
            self.cpu_share() * 100.0
        );
        assert!(!self.exited, "{what}: the process exited: {:#?}", self.lines);
        assert!(
            self.lines.len() <= max_lines,
            "{what}: {} log lines: {:#?}",
            self.lines.len(),
            self.lines
        );
        assert!(
            self.cpu_share() < max_share,
            "{what}: CPU {:.1} % of a core",
            self.cpu_share() * 100.0
        );
    }
}
