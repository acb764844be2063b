//! The stampede under attack: honest buyers, each from an address of its own behind a trusted
//! proxy, while one scalper token and one flooding address add half as many connections again;
//! against the same honest stampede with those connections asking `GET /healthz` instead. A
//! refused request should cost no more than a health check (goal: >= 0.9 of the honest rate).
//! It runs on a server of its own with admission on (the other phases turn it off).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderValue;

use super::checks::{verify_counts, Admin};
use super::load::{self, Ctx, Group, Workload};
use super::report::{Phase, Report};
use super::server::{self, OwnServer};
use super::{cpu, loopback_addr, BenchArgs};

pub(super) fn run(
    args: &BenchArgs,
    dir: &Path,
    secret: &str,
    ctx: &Ctx,
    report: &mut Report,
) -> anyhow::Result<()> {
    let admin_key = server::create_admin_key(dir)?;
    let srv = OwnServer::start(
        dir,
        secret,
        &args.synchronous,
        &["--rate-limit", "on", "--trusted-proxies", "127.0.0.1/32"],
    )?;
    let addr = loopback_addr(&srv.base)?;
    let ctx = Arc::new(Ctx {
        addr,
        host: HeaderValue::from_str(&addr.to_string())?,
        tokens: ctx.tokens.clone(),
        run_id: format!("{}-attack", ctx.run_id),
    });
    let admin = Admin::new(&srv.base, &admin_key)?;
    let own = Some(srv);
    let extra = (args.connections / 2).max(2);
    for round in 1..=args.rounds {
        let drop = format!("bench-{}-{round}", ctx.run_id);
        admin.create_drop(&drop, 1_000_000_000)?;
        let honest = Group {
            workload: Workload::HoldForwarded { drop: drop.clone() },
            connections: args.connections,
        };
        let beside = [
            vec![
                honest.clone(),
                Group {
                    workload: Workload::Health,
                    connections: extra,
                },
            ],
            vec![
                honest.clone(),
                Group {
                    workload: Workload::Scalp { drop: drop.clone() },
                    connections: extra / 2,
                },
                Group {
                    workload: Workload::Flood { drop: drop.clone() },
                    connections: extra - extra / 2,
                },
            ],
        ];
        let mut acked = 0;
        for (name, groups) in ["honest, healthz beside", "honest under attack"]
            .into_iter()
            .zip(beside)
        {
            eprintln!("phase {name}...");
            let pid = own.as_ref().map(|s| s.pid);
            let before = cpu::sample(pid);
            // Phase numbers apart from the main run's, so idempotency keys never repeat.
            let number = 1_000 + round * 2 + usize::from(name.contains("attack"));
            let results = load::run(
                ctx.clone(),
                number,
                &groups,
                args.duration,
                args.max_requests_per_connection,
            )?;
            let usage = cpu::between(&before, &cpu::sample(pid));
            acked += results.iter().map(|r| r.outcome("held")).sum::<u64>();
            let errors = results.iter().any(|r| r.errors > 0);
            let mut p = Phase::new(name, round, &results[0], usage);
            p.invariants = verify_counts(&own, &drop, acked, errors, None)?;
            report.add(p);
            for (who, r) in ["healthz beside", "scalper", "flood"]
                .iter()
                .filter(|w| (**w == "healthz beside") != name.contains("attack"))
                .zip(&results[1..])
            {
                report.add(Phase::new(who, round, r, usage));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if let Some(srv) = own {
        srv.stop()?;
    }
    Ok(())
}
