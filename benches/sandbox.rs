//! Sandbox benchmark: 5,000 nodes and 50,000 pods held in the sandbox; LIST latency through a
//! real kube client over HTTPS, resident memory, and watch fan-out throughput.
//!
//! Run with `cargo bench --bench sandbox`. Sizes can be changed with NMO_BENCH_NODES,
//! NMO_BENCH_PODS and NMO_BENCH_WATCHERS.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use nmo::sandbox::{NewPod, Sandbox};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident set size of this process, in MiB, from /proc/self/status.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn stats(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p50 = samples[samples.len() / 2];
    let max = *samples.last().unwrap();
    println!(
        "  {label:<48} p50 {:>9.2} ms   max {:>9.2} ms   ({} runs)",
        ms(p50),
        ms(max),
        samples.len()
    );
}

async fn time_list<K>(api: &Api<K>, lp: &ListParams, runs: usize) -> (Vec<Duration>, usize)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut samples = Vec::new();
    let mut n = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let l = api.list(lp).await.expect("list works");
        samples.push(t.elapsed());
        n = l.items.len();
    }
    (samples, n)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let nodes = env_or("NMO_BENCH_NODES", 5_000);
    let pods = env_or("NMO_BENCH_PODS", 50_000);
    let watchers = env_or("NMO_BENCH_WATCHERS", 50);
    println!("sandbox benchmark: {nodes} nodes, {pods} pods, {watchers} watchers");
    let rss0 = rss_mib();
    let s = Sandbox::builder().start().await.expect("sandbox starts");
    let t = Instant::now();
    for i in 0..nodes {
        s.add_node(
            &format!("node-{i:05}"),
            &[("node-role.kubernetes.io/worker", "")],
        )
        .unwrap();
    }
    for p in 0..pods {
        let node = format!("node-{:05}", p % nodes);
        let rs = format!("app-{:03}", p % 500);
        s.create_pod(
            NewPod::new("")
                .namespace(&format!("ns-{:02}", p % 20))
                .on_node(&node)
                .label("app", &rs)
                .replica_set(&rs),
        )
        .unwrap();
    }
    let seed = t.elapsed();
    let rss1 = rss_mib();
    println!(
        "seeding: {:.2} s ({:.0} objects/s)",
        seed.as_secs_f64(),
        (nodes + pods) as f64 / seed.as_secs_f64()
    );
    println!(
        "memory (VmRSS): {rss0:.1} MiB before, {rss1:.1} MiB with the cluster loaded ({:.1} MiB held)",
        rss1 - rss0
    );

    let client = s.client().unwrap();
    let all_pods: Api<Pod> = Api::all(client.clone());
    let all_nodes: Api<Node> = Api::all(client.clone());
    println!("LIST latency (kube client over HTTPS, JSON decoded into k8s-openapi types):");
    let (d, n) = time_list(&all_pods, &ListParams::default(), 5).await;
    stats(&format!("pods, all namespaces ({n} items)"), d);
    let (d, n) = time_list(&all_pods, &ListParams::default().limit(500), 20).await;
    stats(&format!("pods, first page of 500 ({n} items)"), d);
    let (d, n) = time_list(
        &all_pods,
        &ListParams::default().fields("spec.nodeName=node-00042"),
        20,
    )
    .await;
    stats(&format!("pods, fieldSelector spec.nodeName ({n} items)"), d);
    let ns_pods: Api<Pod> = Api::namespaced(client.clone(), "ns-07");
    let (d, n) = time_list(&ns_pods, &ListParams::default().labels("app=app-007"), 20).await;
    stats(
        &format!("pods, one namespace + labelSelector ({n} items)"),
        d,
    );
    let (d, n) = time_list(&all_nodes, &ListParams::default(), 10).await;
    stats(&format!("nodes ({n} items)"), d);
    println!("memory (VmRSS) after the LISTs: {:.1} MiB", rss_mib());

    // Watch fan-out: `watchers` watches on nodes, then writes to nodes; every watcher must
    // see every event.
    let writes = 1_000usize;
    let rv = s.resource_version().to_string();
    let mut tasks = Vec::new();
    let start = Instant::now() + Duration::from_millis(0);
    for _ in 0..watchers {
        let api = all_nodes.clone();
        let rv = rv.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = api
                .watch(&WatchParams::default().timeout(290), &rv)
                .await
                .unwrap()
                .boxed();
            let mut seen = 0usize;
            while seen < writes {
                match stream.next().await {
                    Some(Ok(WatchEvent::Modified(_))) => seen += 1,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("watch failed: {e}"),
                    None => panic!("watch ended after {seen} events"),
                }
            }
            Instant::now()
        }));
    }
    // Let the watches connect before writing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    for i in 0..writes {
        s.set_node_ready(&format!("node-{:05}", i % nodes), i % 2 == 1)
            .unwrap();
    }
    let write_time = t.elapsed();
    let mut last = t;
    for task in tasks {
        last = last.max(task.await.unwrap());
    }
    let _ = start;
    let elapsed = last - t;
    let delivered = writes * watchers;
    println!(
        "watch fan-out: {writes} node writes in {:.2} s, delivered to {watchers} watchers ({delivered} events) in {:.2} s: {:.0} events/s",
        write_time.as_secs_f64(),
        elapsed.as_secs_f64(),
        delivered as f64 / elapsed.as_secs_f64()
    );
    println!("memory (VmRSS) at the end: {:.1} MiB", rss_mib());
    s.shutdown().await;
}
