//! Storm: three electors on one store, random faults, latencies, health
//! flips, kills and restarts. The fence intervals of different nodes never
//! overlap.

use super::*;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn overlaps(a: &[(MonoTime, MonoTime)], b: &[(MonoTime, MonoTime)]) -> Option<String> {
    for &(s1, e1) in a {
        for &(s2, e2) in b {
            if s1 < e1 && s2 < e2 && s1 < e2 && s2 < e1 {
                return Some(format!("[{s1:?},{e1:?}) vs [{s2:?},{e2:?})"));
            }
        }
    }
    None
}

async fn storm(seed: u64) -> u64 {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    let names = ["a", "b", "c"];
    let mut nodes: Vec<Node> = Vec::new();
    for (i, n) in names.iter().enumerate() {
        clock.wall_skew = SignedDuration::from_secs(rng.below(7200) as i64 - 3600);
        let c = clock.clone();
        let client = server.client(Arc::new(move || c.mono()));
        assert_eq!(nodes.len(), i);
        let fence = RecFence::new(&clock, &server);
        nodes.push(spawn_node(n, &clock, client, fence, true));
    }
    let end = clock.base + Duration::from_secs(120);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rng.below(1500))).await;
        let i = rng.below(3) as usize;
        match rng.below(10) {
            0 | 1 => server.set_mode(i, Mode::Fail),
            2 => server.set_mode(i, Mode::Hang),
            3 | 4 => server.set_mode(i, Mode::Up),
            5 => {
                let h = !*nodes[i].health.borrow();
                nodes[i].health.send_replace(h);
            }
            6 => {
                let lat = (
                    Duration::from_millis(rng.below(400)),
                    Duration::from_millis(rng.below(400)),
                );
                *nodes[i].client.latency.lock().expect("lock") = lat;
            }
            7 => {
                // Kill (no release, fence stays until its deadline) and restart.
                nodes[i].task.abort();
                let _ = (&mut nodes[i].task).await;
                let n = &nodes[i];
                let (client, fence) = (n.client.clone(), n.fence.clone());
                let healthy = *n.health.borrow();
                nodes[i] = spawn_node(names[i], &clock, client, fence, healthy);
            }
            8 => {
                // Graceful stop and restart.
                nodes[i].shutdown.cancel();
                let _ = (&mut nodes[i].task).await;
                let n = &nodes[i];
                let (client, fence) = (n.client.clone(), n.fence.clone());
                let healthy = *n.health.borrow();
                nodes[i] = spawn_node(names[i], &clock, client, fence, healthy);
            }
            _ => {}
        }
    }
    // Calm: everything up and healthy; somebody must lead again.
    for (i, n) in nodes.iter().enumerate() {
        server.set_mode(i, Mode::Up);
        *n.client.latency.lock().expect("lock") = (Duration::ZERO, Duration::ZERO);
        n.health.send_replace(true);
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    let leaders = nodes
        .iter()
        .filter(|n| n.status.borrow().role == Role::Leading)
        .count();
    assert_eq!(leaders, 1, "seed {seed}: exactly one leader after calm");
    for n in &nodes {
        n.shutdown.cancel();
    }
    for n in &mut nodes {
        let _ = (&mut n.task).await;
    }
    let mut takeovers = 0;
    for i in 0..3 {
        let a = nodes[i].fence.intervals.lock().expect("lock").clone();
        takeovers += a.len() as u64;
        // lead() deadlines are always a request send time + renew_deadline.
        let sends = nodes[i].client.requests("");
        for (_, d) in nodes[i].fence.leads() {
            assert!(
                sends.contains(&MonoTime(d.0 - 3_000_000_000)),
                "seed {seed}: node {i} deadline not send+rd"
            );
        }
        for (j, other) in nodes.iter().enumerate().skip(i + 1) {
            let b = other.fence.intervals.lock().expect("lock").clone();
            if let Some(o) = overlaps(&a, &b) {
                panic!("seed {seed}: nodes {i} and {j} answered at once: {o}");
            }
        }
    }
    takeovers
}

#[tokio::test(start_paused = true)]
async fn storm_never_two_leaders() {
    let mut takeovers = 0;
    for seed in 1..=200 {
        takeovers += storm(seed).await;
    }
    // The storm must actually move leadership around.
    assert!(takeovers > 200, "only {takeovers} leadership intervals");
}
