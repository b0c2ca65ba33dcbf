//! The queue's order, bound, refusals and places, with paused time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::*;

/// Lets every ready task run (paused time advances only when all are idle).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// A caller admitted in a task: says its name on `order` when admitted, and holds
/// its permit until `release` fires.
fn waiter(
    queue: &Arc<StartQueue>,
    caller: Caller,
    name: &'static str,
    order: &Arc<Mutex<Vec<&'static str>>>,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), Refusal>>,
) {
    let (release, released) = oneshot::channel::<()>();
    let (queue, order) = (queue.clone(), order.clone());
    let task = tokio::spawn(async move {
        let permit = queue.admit(&caller).await?;
        order.lock().unwrap().push(name);
        let _ = released.await;
        drop(permit);
        Ok(())
    });
    (release, task)
}

fn student() -> Caller {
    Caller::quiet(Class::Student)
}

#[tokio::test(start_paused = true)]
async fn at_most_concurrency_start_and_the_rest_go_in_arrival_order() {
    let queue = StartQueue::new("a1", 2, 10);
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut held = Vec::new();
    for name in ["s1", "s2", "s3", "s4", "s5"] {
        held.push(waiter(&queue, student(), name, &order));
        settle().await;
    }
    assert_eq!(*order.lock().unwrap(), ["s1", "s2"]);
    assert_eq!((queue.in_flight(), queue.waiting()), (2, 3));
    let mut held = held.into_iter();
    for expected in [&["s1", "s2", "s3"][..], &["s1", "s2", "s3", "s4"]] {
        let (release, task) = held.next().unwrap();
        release.send(()).unwrap();
        task.await.unwrap().unwrap();
        settle().await;
        assert_eq!(*order.lock().unwrap(), expected);
        assert_eq!(queue.in_flight(), 2);
    }
    for (release, task) in held {
        release.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), ["s1", "s2", "s3", "s4", "s5"]);
    assert_eq!((queue.in_flight(), queue.waiting()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn every_waiting_student_goes_before_any_waiting_prestart() {
    let queue = StartQueue::new("a1", 1, 10);
    let order = Arc::new(Mutex::new(Vec::new()));
    let prestart = || Caller::quiet(Class::Prestart);
    let mut held = vec![("first", waiter(&queue, student(), "first", &order))];
    settle().await;
    for (caller, name) in [
        (prestart(), "p1"),
        (student(), "s1"),
        (prestart(), "p2"),
        (student(), "s2"),
    ] {
        held.push((name, waiter(&queue, caller, name, &order)));
        settle().await;
    }
    assert_eq!((queue.waiting(), queue.waiting_prestarts()), (2, 2));
    // The one admitted last is released each time; one more is admitted.
    for admitted in 1..=5 {
        assert_eq!(order.lock().unwrap().len(), admitted);
        let last = *order.lock().unwrap().last().unwrap();
        let i = held.iter().position(|(n, _)| *n == last).unwrap();
        let (_, (release, task)) = held.remove(i);
        release.send(()).unwrap();
        task.await.unwrap().unwrap();
        settle().await;
    }
    assert_eq!(*order.lock().unwrap(), ["first", "s1", "s2", "p1", "p2"]);
}

#[tokio::test(start_paused = true)]
async fn past_the_limit_a_student_is_refused_at_once_with_a_time() {
    let queue = StartQueue::new("a1", 1, 1);
    let order = Arc::new(Mutex::new(Vec::new()));
    let _first = waiter(&queue, student(), "first", &order);
    settle().await;
    let _second = waiter(&queue, student(), "second", &order);
    settle().await;
    let refused = queue.admit(&student()).await.err();
    assert_eq!(
        refused,
        Some(Refusal::Full {
            starting: 2,
            retry: 4
        }),
        "1 in flight, 1 waiting; 2 waves of the 2 s first guess"
    );
    // Prestarts have their own bound: students never fill it.
    let _p = waiter(&queue, Caller::quiet(Class::Prestart), "p", &order);
    settle().await;
    assert_eq!(queue.waiting_prestarts(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_caller_who_leaves_is_out_and_nobody_waits_for_it() {
    let queue = StartQueue::new("a1", 1, 10);
    let order = Arc::new(Mutex::new(Vec::new()));
    let (release, first) = waiter(&queue, student(), "first", &order);
    settle().await;
    let left = CancellationToken::new();
    let leaving = Caller {
        left: Some(left.clone()),
        ..student()
    };
    let (_keep, gone) = waiter(&queue, leaving, "gone", &order);
    let told = Arc::new(Mutex::new(Vec::new()));
    let last = Caller {
        told: Some({
            let told = told.clone();
            Arc::new(move |p: Place| told.lock().unwrap().push(p.ahead))
        }),
        ..student()
    };
    let (release_last, last) = waiter(&queue, last, "last", &order);
    settle().await;
    assert_eq!(queue.waiting(), 2);
    left.cancel();
    assert_eq!(gone.await.unwrap(), Err(Refusal::Left));
    assert_eq!(queue.waiting(), 1);
    // Past the throttle, the one behind is told it moved up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A dropped wait leaves too.
    let dropped = tokio::spawn({
        let queue = queue.clone();
        async move { queue.admit(&Caller::quiet(Class::Student)).await.map(drop) }
    });
    settle().await;
    assert_eq!(queue.waiting(), 2);
    dropped.abort();
    settle().await;
    assert_eq!(queue.waiting(), 1);
    release.send(()).unwrap();
    first.await.unwrap().unwrap();
    release_last.send(()).unwrap();
    last.await.unwrap().unwrap();
    assert_eq!(*order.lock().unwrap(), ["first", "last"]);
    assert_eq!(
        *told.lock().unwrap(),
        [1, 0],
        "told when queued and as it moved"
    );
    assert_eq!(queue.in_flight(), 0);
    // One already gone takes no free place.
    let gone = Caller {
        left: Some(left),
        ..student()
    };
    assert_eq!(queue.admit(&gone).await.err(), Some(Refusal::Left));
    assert_eq!(queue.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn places_are_told_as_they_fall_a_few_times_a_second_at_most() {
    let queue = StartQueue::new("a1", 1, 100);
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut ahead = Vec::new();
    let (release0, first) = waiter(&queue, student(), "first", &order);
    settle().await;
    for _ in 0..5 {
        ahead.push(waiter(&queue, student(), "ahead", &order));
        settle().await;
    }
    let told = Arc::new(Mutex::new(Vec::new()));
    let watcher = Caller {
        told: Some({
            let told = told.clone();
            Arc::new(move |p: Place| told.lock().unwrap().push((p.ahead, p.line())))
        }),
        ..student()
    };
    let (release_me, me) = waiter(&queue, watcher, "me", &order);
    settle().await;
    // Five starts end within a few milliseconds: not five lines.
    release0.send(()).unwrap();
    first.await.unwrap().unwrap();
    for (release, task) in ahead.drain(..4) {
        release.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lines = told.lock().unwrap().clone();
    let places: Vec<usize> = lines.iter().map(|(a, _)| *a).collect();
    assert_eq!(places.first(), Some(&5));
    assert_eq!(places.last(), Some(&0));
    assert!(places.windows(2).all(|w| w[1] < w[0]), "{places:?}");
    assert!(places.len() < 6, "throttled: {places:?}");
    assert!(
        lines[0]
            .1
            .starts_with("starting your container (5 ahead of you, about "),
        "{}",
        lines[0].1
    );
    for (release, task) in ahead {
        release.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
    release_me.send(()).unwrap();
    me.await.unwrap().unwrap();
}
