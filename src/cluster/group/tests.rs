//! The group state machine on paused time.

use super::*;
use tokio::time::advance;

const TTL: Duration = Duration::from_secs(2);

fn params(node: &str) -> Params {
    Params {
        node: node.into(),
        nodes: vec!["a".into(), "b".into(), "c".into()],
        renew_every: TTL / 4,
        fence_after: TTL / 2,
        rank_step: Duration::from_millis(300),
        holdoff: TTL,
        no_standby_grace: Duration::from_secs(10),
        preempt: false,
        keep_if_peers_agree: false,
        takeover_after: None,
    }
}

fn seen(leader: Option<(&str, i64)>, qualified: &[&str]) -> Observed {
    Observed {
        leader: leader.map(|(n, t)| (n.to_string(), t)),
        handoff: None,
        request: None,
        qualified: qualified.iter().map(|s| s.to_string()).collect(),
        beat: None,
    }
}

fn beat(leader: (&str, i64), rev: i64, qualified: &[&str]) -> Observed {
    Observed {
        beat: Some(rev),
        ..seen(Some(leader), qualified)
    }
}

fn fast(node: &str) -> Group {
    Group::new(Params {
        takeover_after: Some(TTL),
        ..params(node)
    })
}

fn obs(g: &mut Group, s: Observed) -> Vec<Action> {
    let now = Instant::now();
    g.handle(
        Input::Observed {
            sent_at: now,
            seen: s,
        },
        now,
    )
}

/// Drives a node from standby to active with token `token`.
fn make_active(g: &mut Group, token: i64) {
    let me = g.p.node.clone();
    assert_eq!(obs(g, seen(None, &[&me])), vec![Action::Verify]);
    assert_eq!(g.role(), Role::Verifying);
    assert_eq!(
        g.handle(Input::Verified(Ok(())), Instant::now()),
        vec![Action::Campaign]
    );
    let sent = Instant::now();
    let out = g.handle(
        Input::Campaigned {
            sent_at: sent,
            result: Ok(Some(token)),
        },
        Instant::now(),
    );
    assert_eq!(out, vec![Action::Activate { token }]);
    assert_eq!(g.role(), Role::Active);
}

#[tokio::test(start_paused = true)]
async fn best_standby_promotes_after_verification() {
    let mut g = Group::new(params("a"));
    make_active(&mut g, 7);
    assert_eq!(g.token(), Some(7));
}

#[tokio::test(start_paused = true)]
async fn a_lower_rank_waits_its_turn_and_defers_to_a_leader() {
    let mut g = Group::new(params("b"));
    // a and b qualify: b is second, waits one rank step.
    assert!(obs(&mut g, seen(None, &["a", "b"])).is_empty());
    advance(Duration::from_millis(200)).await;
    assert!(obs(&mut g, seen(None, &["a", "b"])).is_empty());
    // a won meanwhile: b stays standby and its clock resets.
    assert!(obs(&mut g, seen(Some(("a", 5)), &["b"])).is_empty());
    advance(Duration::from_millis(500)).await;
    assert!(
        obs(&mut g, seen(None, &["a", "b"])).is_empty(),
        "a fresh leaderless period"
    );
    advance(Duration::from_millis(300)).await;
    assert_eq!(obs(&mut g, seen(None, &["a", "b"])), vec![Action::Verify]);
}

#[tokio::test(start_paused = true)]
async fn a_node_that_does_not_qualify_never_campaigns_and_the_next_moves_up() {
    let mut b = Group::new(params("b"));
    let mut c = Group::new(params("c"));
    // b does not qualify: only c is in the list; c is rank 0 among qualified.
    assert!(obs(&mut b, seen(None, &["c"])).is_empty());
    assert_eq!(obs(&mut c, seen(None, &["c"])), vec![Action::Verify]);
    // A standby whose fresh verification fails steps aside.
    let mut a = Group::new(params("a"));
    assert_eq!(obs(&mut a, seen(None, &["a"])), vec![Action::Verify]);
    let out = a.handle(Input::Verified(Err("disk full".into())), Instant::now());
    assert_eq!(
        out,
        vec![Action::StepAside {
            reason: "disk full".into()
        }]
    );
    assert_eq!(a.role(), Role::Standby);
}

#[tokio::test(start_paused = true)]
async fn none_qualifies_is_reported_once_and_cleared() {
    let mut g = Group::new(params("b"));
    // Not at once: a node that just started has not verified itself yet.
    assert!(
        obs(&mut g, seen(None, &[])).is_empty(),
        "not before the grace"
    );
    advance(Duration::from_secs(10)).await;
    assert_eq!(
        obs(&mut g, seen(None, &[])),
        vec![Action::NoStandby { leaderless: true }]
    );
    assert!(obs(&mut g, seen(None, &[])).is_empty(), "edge-triggered");
    let out = obs(&mut g, seen(None, &["c"]));
    assert_eq!(out, vec![Action::StandbyOk]);
}

#[tokio::test(start_paused = true)]
async fn the_active_renews_and_fences_itself_before_the_lease_can_expire() {
    let mut g = Group::new(params("a"));
    make_active(&mut g, 3);
    let start = Instant::now();
    // Renewals every ttl/4 while they succeed.
    advance(TTL / 4).await;
    assert_eq!(g.handle(Input::Tick, Instant::now()), vec![Action::Renew]);
    let sent = Instant::now();
    g.handle(
        Input::Renewed {
            sent_at: sent,
            alive: true,
        },
        Instant::now(),
    );
    // Now the store goes away: renewals fail.
    let mut fenced_at = None;
    for _ in 0..100 {
        let next = g.next_deadline().expect("an active group has a deadline");
        tokio::time::sleep_until(next).await;
        for a in g.handle(Input::Tick, Instant::now()) {
            match a {
                Action::Renew => {
                    g.handle(Input::RenewFailed("unreachable".into()), Instant::now());
                }
                Action::Demote { fence, handoff, .. } => {
                    assert!(fence);
                    assert_eq!(handoff, None);
                    fenced_at = Some(Instant::now());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        if fenced_at.is_some() {
            break;
        }
    }
    let fenced_at = fenced_at.expect("it fenced itself");
    assert_eq!(g.role(), Role::Demoting);
    // The lease lives at least until the last good send + ttl; the fence
    // leaves half of it for stopping the units.
    assert_eq!(fenced_at, sent + TTL / 2);
    assert!(fenced_at + TTL / 2 <= sent + TTL);
    assert!(fenced_at > start);
    g.handle(Input::Stopped, Instant::now());
    assert_eq!(g.role(), Role::Standby);
    assert_eq!(g.token(), None);
}

#[tokio::test(start_paused = true)]
async fn a_slow_successful_renewal_counts_from_when_it_was_sent() {
    let mut g = Group::new(params("a"));
    make_active(&mut g, 3);
    advance(TTL / 4).await;
    assert_eq!(g.handle(Input::Tick, Instant::now()), vec![Action::Renew]);
    let sent = Instant::now();
    // The answer takes 900 ms: the lease was renewed at most at `sent`.
    advance(Duration::from_millis(900)).await;
    g.handle(
        Input::Renewed {
            sent_at: sent,
            alive: true,
        },
        Instant::now(),
    );
    assert_eq!(g.next_deadline().map(|d| d <= sent + TTL / 2), Some(true));
}

#[tokio::test(start_paused = true)]
async fn a_lost_lease_demotes_at_once() {
    let mut g = Group::new(params("a"));
    make_active(&mut g, 3);
    advance(TTL / 4).await;
    g.handle(Input::Tick, Instant::now());
    let out = g.handle(
        Input::Renewed {
            sent_at: Instant::now(),
            alive: false,
        },
        Instant::now(),
    );
    assert!(
        matches!(out.as_slice(), [Action::Demote { fence: true, .. }]),
        "{out:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_poll_sent_before_winning_does_not_demote() {
    let mut g = Group::new(params("a"));
    let before = Instant::now();
    obs(&mut g, seen(None, &["a"]));
    g.handle(Input::Verified(Ok(())), Instant::now());
    advance(Duration::from_millis(10)).await;
    g.handle(
        Input::Campaigned {
            sent_at: Instant::now(),
            result: Ok(Some(9)),
        },
        Instant::now(),
    );
    let out = g.handle(
        Input::Observed {
            sent_at: before,
            seen: seen(None, &[]),
        },
        Instant::now(),
    );
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(g.role(), Role::Active);
    // A poll sent after winning that does not see our key does demote.
    advance(Duration::from_millis(10)).await;
    let out = obs(&mut g, seen(None, &[]));
    assert!(matches!(out.as_slice(), [Action::Demote { .. }]), "{out:?}");
}

#[tokio::test(start_paused = true)]
async fn no_preemption_by_default_but_preempt_asks_for_a_switchover() {
    let mut a = Group::new(params("a"));
    assert!(
        obs(&mut a, seen(Some(("b", 4)), &["a"])).is_empty(),
        "nopreempt"
    );
    let mut p = params("a");
    p.preempt = true;
    let mut a = Group::new(p);
    assert_eq!(
        obs(&mut a, seen(Some(("b", 4)), &["a"])),
        vec![Action::RequestSwitchover { to: "a".into() }]
    );
    // c is lower than b: no preemption.
    let mut p = params("c");
    p.preempt = true;
    let mut c = Group::new(p);
    assert!(obs(&mut c, seen(Some(("b", 4)), &["c"])).is_empty());
}

#[tokio::test(start_paused = true)]
async fn switchover_hands_off_to_a_qualified_target_only() {
    let mut a = Group::new(params("a"));
    make_active(&mut a, 3);
    advance(Duration::from_millis(10)).await;
    let mut s = seen(Some(("a", 3)), &["b"]);
    s.request = Some("c".into());
    let out = obs(&mut a, s);
    assert!(
        matches!(&out[..], [Action::RejectRequest { to, .. }] if to == "c"),
        "{out:?}"
    );
    let mut s = seen(Some(("a", 3)), &["b", "c"]);
    s.request = Some("c".into());
    let out = obs(&mut a, s);
    assert_eq!(
        out,
        vec![Action::Demote {
            reason: "switchover to c".into(),
            handoff: Some("c".into()),
            fence: false
        }]
    );
    // The handoff names who campaigns: b waits, c goes at once.
    let mut b = Group::new(params("b"));
    let mut c = Group::new(params("c"));
    let mut s = seen(None, &["b", "c"]);
    s.handoff = Some("c".into());
    advance(Duration::from_secs(5)).await;
    assert!(obs(&mut b, s.clone()).is_empty());
    assert_eq!(obs(&mut c, s), vec![Action::Verify]);
}

#[tokio::test(start_paused = true)]
async fn standbys_hold_off_after_the_store_returns() {
    let mut b = Group::new(params("b"));
    b.handle(Input::StoreError("down".into()), Instant::now());
    assert!(obs(&mut b, seen(None, &["b"])).is_empty(), "held off");
    advance(TTL).await;
    assert_eq!(obs(&mut b, seen(None, &["b"])), vec![Action::Verify]);
}

#[tokio::test(start_paused = true)]
async fn keep_if_all_peers_agree_keeps_then_retakes_the_key() {
    let mut p = params("a");
    p.keep_if_peers_agree = true;
    let mut g = Group::new(p);
    make_active(&mut g, 3);
    let mut asked = false;
    for _ in 0..20 {
        tokio::time::sleep_until(g.next_deadline().unwrap()).await;
        for a in g.handle(Input::Tick, Instant::now()) {
            match a {
                Action::Renew => {
                    g.handle(Input::RenewFailed("down".into()), Instant::now());
                }
                Action::AskPeers => asked = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        if asked {
            break;
        }
    }
    assert!(asked);
    assert_eq!(
        g.handle(Input::PeersAgree(true), Instant::now()),
        vec![Action::KeptByPeers]
    );
    assert_eq!(g.role(), Role::Active);
    // The store returns; the lease expired meanwhile: re-take the key.
    let out = g.handle(
        Input::Renewed {
            sent_at: Instant::now(),
            alive: false,
        },
        Instant::now(),
    );
    assert_eq!(out, vec![Action::Campaign]);
    let out = g.handle(
        Input::Campaigned {
            sent_at: Instant::now(),
            result: Ok(Some(11)),
        },
        Instant::now(),
    );
    assert_eq!(out, vec![Action::Retoken { token: 11 }]);
    assert_eq!(g.token(), Some(11));
    // A peer that disagrees makes it demote at once.
    let mut p = params("a");
    p.keep_if_peers_agree = true;
    let mut g = Group::new(p);
    make_active(&mut g, 3);
    advance(TTL / 4 + Duration::from_millis(10)).await;
    let out = g.handle(Input::Tick, Instant::now());
    assert!(
        out.contains(&Action::AskPeers),
        "asked before the deadline: {out:?}"
    );
    assert_eq!(g.role(), Role::Active);
    let out = g.handle(Input::PeersAgree(false), Instant::now());
    assert!(
        matches!(&out[..], [Action::Demote { fence: true, .. }]),
        "{out:?}"
    );
    // No answer by the deadline: demote all the same.
    let mut p = params("a");
    p.keep_if_peers_agree = true;
    let mut g = Group::new(p);
    make_active(&mut g, 3);
    advance(TTL / 4 + Duration::from_millis(10)).await;
    assert!(g
        .handle(Input::Tick, Instant::now())
        .contains(&Action::AskPeers));
    advance(TTL / 4).await;
    let out = g.handle(Input::Tick, Instant::now());
    assert!(
        matches!(&out[..], [Action::Demote { fence: true, .. }]),
        "{out:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_active_reports_lost_redundancy_after_the_grace() {
    let mut a = Group::new(params("a"));
    make_active(&mut a, 3);
    advance(Duration::from_millis(10)).await;
    assert!(obs(&mut a, seen(Some(("a", 3)), &[])).is_empty());
    advance(Duration::from_secs(10)).await;
    let out: Vec<Action> = obs(&mut a, seen(Some(("a", 3)), &[]))
        .into_iter()
        .filter(|x| !matches!(x, Action::Renew | Action::Demote { .. }))
        .collect();
    assert!(
        out.contains(&Action::NoStandby { leaderless: false }),
        "{out:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn fast_takeover_deletes_the_key_ttl_after_the_beat_stopped_changing() {
    let mut b = fast("b");
    let t0 = Instant::now();
    assert!(obs(&mut b, beat(("a", 7), 100, &["b"])).is_empty());
    assert_eq!(b.next_deadline(), Some(t0 + TTL));
    // The beat moves on: the clock restarts from when the new one was seen.
    advance(Duration::from_millis(500)).await;
    let t1 = Instant::now();
    assert!(obs(&mut b, beat(("a", 7), 104, &["b"])).is_empty());
    assert_eq!(b.next_deadline(), Some(t1 + TTL));
    // The same beat seen again does not move the deadline.
    advance(Duration::from_millis(1500)).await;
    assert!(obs(&mut b, beat(("a", 7), 104, &["b"])).is_empty());
    assert_eq!(b.next_deadline(), Some(t1 + TTL));
    // Not a moment before ttl has passed since the beat was first seen.
    advance(Duration::from_millis(499)).await;
    assert!(b.handle(Input::Tick, Instant::now()).is_empty());
    advance(Duration::from_millis(1)).await;
    assert_eq!(
        b.handle(Input::Tick, Instant::now()),
        vec![Action::Takeover {
            node: "a".into(),
            token: 7,
            beat: 104
        }]
    );
    // One at a time; then the next poll decides (here: leaderless, so verify).
    assert_eq!(b.next_deadline(), None);
    assert!(b.handle(Input::Tick, Instant::now()).is_empty());
    assert!(b.handle(Input::TookOver(true), Instant::now()).is_empty());
    assert_eq!(b.role(), Role::Standby);
    assert_eq!(obs(&mut b, seen(None, &["b"])), vec![Action::Verify]);
}

#[tokio::test(start_paused = true)]
async fn fast_takeover_starts_over_after_a_failed_attempt_or_a_new_leader() {
    let mut b = fast("b");
    obs(&mut b, beat(("a", 7), 100, &["b"]));
    advance(TTL).await;
    assert!(matches!(
        b.handle(Input::Tick, Instant::now())[..],
        [Action::Takeover { beat: 100, .. }]
    ));
    // The guard failed (a newer beat we had not seen): wait a full ttl again.
    b.handle(Input::TookOver(false), Instant::now());
    assert_eq!(b.next_deadline(), None);
    let t = Instant::now();
    obs(&mut b, beat(("a", 7), 100, &["b"]));
    assert_eq!(b.next_deadline(), Some(t + TTL));
    // A new leader (new token) with the same beat revision is a new beat.
    advance(Duration::from_millis(300)).await;
    let t2 = Instant::now();
    obs(&mut b, beat(("c", 9), 100, &["b"]));
    assert_eq!(b.next_deadline(), Some(t2 + TTL));
    // A leader without a beat (fast takeover off there): no takeover at all.
    obs(&mut b, seen(Some(("c", 9)), &["b"]));
    assert_eq!(b.next_deadline(), None);
    advance(TTL * 3).await;
    assert!(b.handle(Input::Tick, Instant::now()).is_empty());
}

#[tokio::test(start_paused = true)]
async fn without_fast_takeover_beats_are_ignored() {
    let mut b = Group::new(params("b"));
    obs(&mut b, beat(("a", 7), 100, &["b"]));
    assert_eq!(b.next_deadline(), None);
    advance(TTL * 3).await;
    assert!(b.handle(Input::Tick, Instant::now()).is_empty());
    assert!(obs(&mut b, beat(("a", 7), 100, &["b"])).is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_active_whose_beat_guard_fails_demotes() {
    let mut a = fast("a");
    make_active(&mut a, 7);
    advance(TTL / 4).await;
    assert_eq!(a.handle(Input::Tick, Instant::now()), vec![Action::Renew]);
    // The shell answers alive = false when the guarded beat write failed:
    // the leader key is no longer ours.
    let out = a.handle(
        Input::Renewed {
            sent_at: Instant::now(),
            alive: false,
        },
        Instant::now(),
    );
    assert!(
        matches!(&out[..], [Action::Demote { fence: true, .. }]),
        "{out:?}"
    );
}
