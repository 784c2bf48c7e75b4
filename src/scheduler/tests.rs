use std::collections::HashMap;
use std::time::Duration;

use tokio::time::{Instant, advance};

use super::*;
use crate::config::Config;
use crate::pool::{DisableReason, Pool};
use crate::scheduler::Usage;

/// A scheduler over one provider whose accounts each have `limits` (a TOML table body) for
/// model `m`, with 10-second "minutes".
fn setup(accounts: usize, limits: &str) -> (Pool, Scheduler) {
    let mut toml = format!(
        "[queue]\nmax_depth = 100\n[[providers]]\nkind = \"groq\"\nminute_window = \"10s\"\nsafety_margin = \"0s\"\n[providers.limits.m]\n{limits}\n"
    );
    for index in 0..accounts {
        toml.push_str(&format!(
            "[[providers.accounts]]\nname = \"a{index}\"\nkeys = [\"k{index}\"]\n"
        ));
    }
    let config = Config::from_toml(&toml, "test.toml", &HashMap::new()).unwrap();
    (Pool::new(&config), Scheduler::new(config.queue.clone()))
}

fn demand(client: ClientId, tokens: u64, wait: Duration) -> Demand {
    Demand {
        client,
        priority: 0,
        cost: Cost { requests: 1, tokens: 0, audio_seconds: 0 },
        prompt_estimate: tokens,
        output_budget: 0,
        deadline: Instant::now() + wait,
    }
}

const LONG: Duration = Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn grants_at_once_while_there_is_room_spreading_by_headroom() {
    let (pool, scheduler) = setup(2, "rpm = 10");
    let lane = scheduler.lane(&pool.providers()[0], "m");
    let mut per_account = [0; 2];
    let mut held = Vec::new();
    for _ in 0..20 {
        let reservation = lane.acquire(demand(1, 0, LONG)).await.unwrap();
        per_account[reservation.account()] += 1;
        held.push(reservation);
    }
    assert_eq!(per_account, [10, 10]);
    assert_eq!(lane.depth(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_is_served_when_the_window_slides() {
    let (pool, scheduler) = setup(1, "rpm = 2");
    let lane = scheduler.lane(&pool.providers()[0], "m");
    let started = Instant::now();
    lane.acquire(demand(1, 0, LONG)).await.unwrap();
    advance(Duration::from_secs(3)).await;
    lane.acquire(demand(1, 0, LONG)).await.unwrap();
    let third = lane.acquire(demand(1, 0, LONG)).await.unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(10),
        "served exactly when the first slot left"
    );
    drop(third);
    let fourth = lane.acquire(demand(1, 0, LONG)).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(13));
    drop(fourth);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_refuses_with_an_honest_retry_after() {
    let (pool, scheduler) = setup(1, "rpm = 1");
    let lane = scheduler.lane(&pool.providers()[0], "m");
    lane.acquire(demand(1, 0, LONG)).await.unwrap();
    let refusal = lane.acquire(demand(1, 0, Duration::from_secs(2))).await.unwrap_err();
    assert_eq!(refusal, Refusal::Deadline { retry_after: Some(Duration::from_secs(8)) });
    assert_eq!(lane.depth(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_request_over_every_accounts_limit_is_refused_at_once() {
    let (pool, scheduler) = setup(2, "tpm = 100");
    let lane = scheduler.lane(&pool.providers()[0], "m");
    let refusal = lane.acquire(demand(1, 150, LONG)).await.unwrap_err();
    assert_eq!(refusal, Refusal::TooLarge { dimension: Dimension::Tpm, limit: 100, needed: 150 });
}

#[tokio::test(start_paused = true)]
async fn settling_with_real_usage_wakes_the_next_waiter_at_once() {
    let (pool, scheduler) = setup(1, "tpm = 100");
    let lane = scheduler.lane(&pool.providers()[0], "m");
    let first = lane.acquire(demand(1, 80, LONG)).await.unwrap();
    let waiter = tokio::spawn({
        let lane = Arc::clone(&lane);
        async move { lane.acquire(demand(2, 50, LONG)).await.map(|r| r.account()) }
    });
    tokio::task::yield_now().await;
    assert_eq!(lane.depth(), 1);
    let started = Instant::now();
    first.settle(Usage { prompt_tokens: 8, completion_tokens: 2 });
    assert_eq!(waiter.await.unwrap(), Ok(0));
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_leaves_the_queue_and_takes_nothing() {
    let (pool, scheduler) = setup(1, "rpm = 1");
    let lane = scheduler.lane(&pool.providers()[0], "m");
    let held = lane.acquire(demand(1, 0, LONG)).await.unwrap();
    let waiter = tokio::spawn({
        let lane = Arc::clone(&lane);
        async move { lane.acquire(demand(2, 0, LONG)).await.is_ok() }
    });
    tokio::task::yield_now().await;
    assert_eq!(lane.depth(), 1);
    waiter.abort();
    let _ = waiter.await;
    assert_eq!(lane.depth(), 0);
    held.refund();
    let next = lane.acquire(demand(3, 0, Duration::ZERO)).await;
    assert!(next.is_ok(), "the slot refunded is free for the next request: {next:?}");
}

#[tokio::test(start_paused = true)]
async fn waiters_are_refused_when_the_last_key_is_disabled() {
    let (pool, scheduler) = setup(1, "rpm = 1");
    let provider = &pool.providers()[0];
    let lane = scheduler.lane(provider, "m");
    let _held = lane.acquire(demand(1, 0, LONG)).await.unwrap();
    let waiter = tokio::spawn({
        let lane = Arc::clone(&lane);
        async move { lane.acquire(demand(2, 0, LONG)).await.map(|r| r.account()) }
    });
    tokio::task::yield_now().await;
    provider.accounts()[0].keys()[0].disable(DisableReason::InvalidKey);
    scheduler.poke(provider);
    assert_eq!(waiter.await.unwrap(), Err(Refusal::NoUsableKey));
    assert_eq!(lane.acquire(demand(3, 0, LONG)).await.unwrap_err(), Refusal::NoUsableKey);
}

#[tokio::test(start_paused = true)]
async fn a_backlogged_heavy_client_does_not_starve_a_light_one() {
    let (pool, scheduler) = setup(1, "rpm = 1");
    let lane = scheduler.lane(&pool.providers()[0], "m");
    let mut tasks = Vec::new();
    for (client, count) in [(1, 10), (2, 2)] {
        for _ in 0..count {
            let lane = Arc::clone(&lane);
            tasks.push(tokio::spawn(async move {
                lane.acquire(demand(client, 0, LONG)).await.unwrap();
                (client, Instant::now())
            }));
            tokio::task::yield_now().await;
        }
    }
    let mut served: Vec<(ClientId, Instant)> = Vec::new();
    for task in tasks {
        served.push(task.await.unwrap());
    }
    served.sort_by_key(|(_, at)| *at);
    let light: Vec<usize> =
        served.iter().enumerate().filter(|(_, (c, _))| *c == 2).map(|(i, _)| i).collect();
    assert!(light[1] <= 4, "client 2's second request was served {}th of 12", light[1] + 1);
}

#[tokio::test(start_paused = true)]
async fn a_429_cools_the_account_and_teaches_its_limit() {
    let (pool, scheduler) = setup(2, "");
    let lane = scheduler.lane(&pool.providers()[0], "m");
    let first = lane.acquire(demand(1, 0, LONG)).await.unwrap();
    let account = first.account();
    lane.rate_limited(first.account_ref(), Duration::from_secs(5), Some((Dimension::Rpm, 30)));
    first.refund();
    for _ in 0..3 {
        let next = lane.acquire(demand(1, 0, LONG)).await.unwrap();
        assert_ne!(next.account(), account, "the cooling account is skipped");
    }
    assert_eq!(lane.limits()[account][Dimension::Rpm.index()], Some(30));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_can_no_longer_fit_is_refused_and_does_not_block_the_rest() {
    let (pool, scheduler) = setup(1, "rpm = 1");
    let lane = scheduler.lane(&pool.providers()[0], "m");
    let first = lane.acquire(demand(1, 0, LONG)).await.unwrap();
    let big = tokio::spawn({
        let lane = Arc::clone(&lane);
        async move { lane.acquire(demand(2, 500, LONG)).await.map(|r| r.account()) }
    });
    tokio::task::yield_now().await;
    let small = tokio::spawn({
        let lane = Arc::clone(&lane);
        async move { lane.acquire(demand(3, 10, LONG)).await.map(|r| r.account()) }
    });
    tokio::task::yield_now().await;
    assert_eq!(lane.depth(), 2);
    // The provider reveals a TPM of 100: the big waiter can never go.
    lane.rate_limited(first.account_ref(), Duration::ZERO, Some((Dimension::Tpm, 100)));
    let refused = big.await.unwrap();
    assert!(
        matches!(refused, Err(Refusal::TooLarge { dimension: Dimension::Tpm, .. })),
        "{refused:?}"
    );
    let started = Instant::now();
    assert_eq!(small.await.unwrap(), Ok(0));
    assert!(started.elapsed() <= Duration::from_secs(10), "served when the RPM window slid");
}
