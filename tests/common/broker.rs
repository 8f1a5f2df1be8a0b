//! A broker of a test's own, from the launcher `docker/kafka-local.sh`, on
//! ports no other test uses, so crashing it disturbs nobody. Stopped (and its
//! data deleted) when dropped.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `docker/kafka-local.sh VERB` with `env` added to the environment.
pub fn launcher(verb: &str, env: &[(&str, String)]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/kafka-local.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script).arg(verb);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running docker/kafka-local.sh")
}

fn launcher_ok(verb: &str, env: &[(&str, String)]) {
    let out = launcher(verb, env);
    assert!(
        out.status.success(),
        "kafka-local.sh {verb} {env:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One single-node broker (its controller on `port + 1`).
pub struct LocalBroker {
    port: u16,
}

impl LocalBroker {
    /// Starts a broker on 127.0.0.1:`port` (after stopping one a crashed
    /// run may have left there).
    pub fn start(port: u16) -> LocalBroker {
        Self::start_with(port, &[])
    }

    /// Starts a broker that listens on `port` but tells clients (in
    /// Metadata) to connect to `advertised`, where a
    /// [`Proxy`](super::proxy::Proxy) relaying to `port` must already listen.
    pub fn start_advertised(port: u16, advertised: u16) -> LocalBroker {
        Self::start_with(port, &[("KAFKA_ADVERTISED_PORT", advertised.to_string())])
    }

    fn start_with(port: u16, extra: &[(&str, String)]) -> LocalBroker {
        let _ = launcher("down", &[("KAFKA_PORT", port.to_string())]);
        let mut env = vec![("KAFKA_PORT", port.to_string())];
        env.extend_from_slice(extra);
        launcher_ok("up", &env);
        LocalBroker { port }
    }

    /// The broker's own listener (clients are sent on to the advertised port).
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILLs the broker, keeping its data: a crash.
    pub fn kill(&self) {
        launcher_ok("kill", &[("KAFKA_PORT", self.port.to_string())]);
    }

    /// Starts the killed broker again on its data; returns once it serves
    /// metadata.
    pub fn restart(&self) {
        launcher_ok("restart", &[("KAFKA_PORT", self.port.to_string())]);
    }

    /// Runs one of Kafka's tools against this broker.
    pub fn tool(&self, name: &str, args: &[&str]) -> String {
        let addr = self.addr();
        let mut all = vec!["--bootstrap-server", addr.as_str()];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&super::kafka_tool(name, &all).stdout).into_owned()
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let args = super::create_topic_args(topic, partitions, 1, &[]);
        self.tool(
            "topics",
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        let _ = launcher("down", &[("KAFKA_PORT", self.port.to_string())]);
    }
}
