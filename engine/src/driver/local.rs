//! The `local` cluster manager's executors: processes of the `sluice` binary on this machine,
//! each in its own process group, supervised (see [`super::supervisor`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::supervisor::{KillRequest, Launch, Running};

/// What to start a local executor with.
#[derive(Debug, Clone)]
pub struct LocalSpawn {
    /// The `sluice` binary.
    pub program: PathBuf,
    /// Driver control address.
    pub driver: std::net::SocketAddr,
    /// Directory with the CA and per-executor certificates.
    pub tls_dir: PathBuf,
    /// Work directory root; each executor gets its own subdirectory.
    pub work_dir: PathBuf,
    /// Slots per executor.
    pub slots: u32,
    /// Memory per executor in bytes.
    pub memory_bytes: u64,
}

impl LocalSpawn {
    fn command(&self, name: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .arg("executor")
            .arg("--driver")
            .arg(self.driver.to_string())
            .arg("--cluster-dir")
            .arg(&self.tls_dir)
            .arg("--name")
            .arg(name)
            .arg("--slots")
            .arg(self.slots.to_string())
            .arg("--memory-mb")
            .arg((self.memory_bytes / (1024 * 1024)).to_string())
            .arg("--work-dir")
            .arg(self.work_dir.join(name))
            .arg("--bind")
            .arg("127.0.0.1:0")
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            // Its own process group: a terminal's Ctrl-C reaches the driver only, which
            // stops gracefully and then stops its executors.
            .process_group(0);
        command
    }
}

impl Launch for LocalSpawn {
    type Running = LocalProcess;

    async fn launch(&self, name: &str, _attempt: u32) -> Result<LocalProcess, String> {
        let child = self.command(name).spawn().map_err(|e| {
            format!(
                "spawning executor {name} from {}: {e}",
                self.program.display()
            )
        })?;
        Ok(LocalProcess {
            pid: child.id().unwrap_or(0),
            child,
        })
    }

    async fn cleanup(&self) {}
}

/// A local executor process; dropping it kills the process.
pub(crate) struct LocalProcess {
    child: tokio::process::Child,
    pid: u32,
}

impl Running for LocalProcess {
    fn describe(&self) -> String {
        format!("pid {}", self.pid)
    }

    /// Only the supervisor's own live child is killed, never a pid from a stale report: that
    /// process may have exited and its pid been reused.
    fn is(&self, request: &KillRequest) -> bool {
        self.child.id() == Some(request.pid)
    }

    async fn wait(&mut self) -> (String, bool) {
        match self.child.wait().await {
            Ok(s) => (describe_status(s), s.success()),
            Err(e) => (format!("could not be waited for: {e}"), false),
        }
    }

    async fn kill(&mut self) -> (String, bool) {
        let _ = self.child.start_kill();
        self.wait().await
    }
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "exited".to_string(),
    }
}

/// Writes the CA and one certificate per local executor into `dir` (keys mode 0600); returns the
/// CA and the driver's identity.
pub fn local_tls(
    dir: &Path,
    names: &[String],
) -> sluice_net::Result<(sluice_net::ClusterCa, sluice_net::NodeIdentity)> {
    let ca = sluice_net::ClusterCa::generate("local")?;
    // Local executors get certificates, not the CA key: only the driver can issue. The run
    // directory does not outlive the run: nothing to fsync.
    ca.without_key().write_to_dir(dir, false)?;
    for name in names {
        ca.issue(name)?.write_to_dir(dir, name, false)?;
    }
    let driver = ca.issue("driver")?;
    Ok((ca, driver))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::driver::cluster::ClusterEvent;
    use crate::driver::supervisor::Supervised;
    use crate::protocol::ExecutorInfo;

    /// A stand-in executor program: writes its pid into its work directory, then sleeps.
    fn sleeper(dir: &Path) -> PathBuf {
        let program = dir.join("sleeper.sh");
        std::fs::write(
            &program,
            "#!/bin/sh\nprev=\nfor a; do [ \"$prev\" = --work-dir ] && mkdir -p \"$a\" && echo $$ > \"$a/pid\"; prev=$a; done\nexec sleep 30\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        program
    }

    fn info(name: &str, pid: u32) -> ExecutorInfo {
        ExecutorInfo {
            name: name.into(),
            slots: 1,
            memory_bytes: 1 << 20,
            data_addr: "127.0.0.1:9".parse().unwrap(),
            pid,
            instance: String::new(),
            state: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_lost_executor_is_killed_through_its_handle_and_only_if_the_pid_is_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let spec = LocalSpawn {
            program: sleeper(dir.path()),
            driver: "127.0.0.1:9".parse().unwrap(),
            tls_dir: dir.path().join("tls"),
            work_dir: dir.path().join("executors"),
            slots: 1,
            memory_bytes: 1 << 20,
        };
        let (tx, mut rx) = mpsc::channel(8);
        let mut processes = Supervised::new(spec, 0, tx);
        let described = processes.start("executor-1").await.unwrap();
        let pid_file = dir.path().join("executors/executor-1/pid");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let pid: u32 = loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break pid;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the program did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(described, format!("pid {pid}"));
        // A pid that is not the supervisor's live child (a stale report) kills nothing.
        processes.killer.kill(&info("executor-1", pid + 1));
        processes.killer.kill(&info("executor-9", pid));
        assert!(
            tokio::time::timeout(Duration::from_millis(300), rx.recv())
                .await
                .is_err(),
            "a request for another pid ended the process"
        );
        processes.killer.kill(&info("executor-1", pid));
        let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the process exits")
            .expect("an event");
        match event {
            ClusterEvent::ProcessExited { name, status } => {
                assert_eq!(name, "executor-1");
                assert_eq!(status, "was killed by signal 9");
            }
            _ => panic!("unexpected event"),
        }
        processes.shutdown(Duration::from_secs(1)).await;
    }
}
