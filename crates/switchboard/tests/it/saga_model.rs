//! The saga model test: random interleavings of command deliveries, lost commands,
//! replies, duplicate and late replies, time (timeouts, compensation backoff), scripted
//! failures and orchestrator restarts, run through [`SagaTest`] against participants that
//! count their effects. Afterwards every instance ends completed, compensated or parked,
//! each action and compensation took effect at most once on its participant, the books
//! balance (a compensated instance undid every step that took effect), compensations ran
//! in reverse order, and the outcome is the one the reference model predicts from the
//! script.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use switchboard::saga::{Command, Saga, SagaTest, Status, Step, StepFailed};
use switchboard::{Message, TopicName};

const STEPS: usize = 3;
const MAX_COMPENSATION_ATTEMPTS: u32 = 3;
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Trip {
    id: String,
}

fn saga() -> Saga<Trip> {
    let mut saga = Saga::new("model", 1).compensation_retries(
        MAX_COMPENSATION_ATTEMPTS,
        switchboard_policy::Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(1),
            multiplier: 1.0,
            jitter: 0.0,
        },
    );
    for i in 0..STEPS {
        saga = saga.step(
            Step::command(["book-flight", "book-hotel", "book-car"][i], move |t: &Trip| {
                Command::new(
                    TopicName::from_static("participants"),
                    Message::new("/model", format!("do.{i}"), t.id.clone()),
                )
            })
            .on_reply(|_, reply| if reply.ty == "ok" { Ok(()) } else { Err(StepFailed::new("refused")) })
            .compensate(move |t: &Trip| {
                Command::new(
                    TopicName::from_static("participants"),
                    Message::new("/model", format!("undo.{i}"), t.id.clone()),
                )
            })
            .on_compensation_reply(|_, reply| {
                if reply.ty == "ok" { Ok(()) } else { Err(StepFailed::new("undo failed")) }
            })
            .timeout(TIMEOUT),
        );
    }
    saga
}

/// What the script decides for one instance.
#[derive(Clone, Debug)]
struct Script {
    /// The step whose participant refuses the action, if any.
    refuse: Option<usize>,
    /// How many times each step's compensation fails before it works.
    undo_failures: [u32; STEPS],
}

/// A participant per step, shared by all instances: it keys its work on the idempotency
/// key, answers a repeat with its first answer, refuses an action whose compensation came
/// first, and counts its effects.
#[derive(Default)]
struct Participants {
    /// (instance, step) → effects of the action, effects of the compensation.
    effects: HashMap<(String, usize), (u32, u32)>,
    /// Answers already given, by idempotency key (only successes are remembered: a refusal
    /// may be tried again).
    answered: HashMap<String, String>,
    /// Compensation failures still to give, per (instance, step).
    undo_failures: HashMap<(String, usize), u32>,
    /// The order compensations took effect in, per instance.
    undo_order: HashMap<String, Vec<usize>>,
}

impl Participants {
    fn handle(&mut self, command: &Command, scripts: &HashMap<String, Script>) -> Message {
        let id = String::from_utf8_lossy(&command.message.data).into_owned();
        let key = command.message.extensions["idempotencykey"].clone();
        let (verb, step) = command.message.ty.split_once('.').expect("typed");
        let step: usize = step.parse().expect("step");
        let answer = |ty: &str| Message::new("/participant", ty.to_owned(), "");
        if let Some(ty) = self.answered.get(&key) {
            return answer(ty);
        }
        let script = &scripts[&id];
        let effects = self.effects.entry((id.clone(), step)).or_default();
        let ty = if verb == "do" {
            if script.refuse == Some(step) || effects.1 > 0 {
                "refused"
            } else {
                effects.0 += 1;
                "ok"
            }
        } else {
            let left = self.undo_failures.entry((id.clone(), step)).or_insert(script.undo_failures[step]);
            if *left > 0 {
                *left -= 1;
                "failed"
            } else {
                if effects.0 > 0 {
                    effects.1 += 1;
                    self.undo_order.entry(id.clone()).or_default().push(step);
                } else {
                    // Nothing to undo: the action never took effect. Remembered, so a late
                    // action is refused.
                    effects.1 += 1;
                }
                "ok"
            }
        };
        if ty == "ok" {
            self.answered.insert(key, ty.to_owned());
        }
        answer(ty)
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Deliver the oldest undelivered command (the participant answers).
    Deliver,
    /// Lose the oldest undelivered command.
    Lose,
    /// Deliver the reply at this position of the undelivered ones.
    Reply(usize),
    /// Deliver again a reply that was delivered before.
    Duplicate(usize),
    /// Move the clock.
    Advance(u64),
    /// Restart the orchestrator.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Deliver),
        1 => Just(Op::Lose),
        6 => (0..4_usize).prop_map(Op::Reply),
        2 => (0..8_usize).prop_map(Op::Duplicate),
        2 => (1..15_u64).prop_map(Op::Advance),
        1 => Just(Op::Restart),
    ]
}

fn script() -> impl Strategy<Value = Script> {
    (
        prop::option::weighted(0.4, 0..STEPS),
        prop::array::uniform3(prop_oneof![4 => Just(0_u32), 2 => 1..3_u32, 1 => 3..5_u32]),
    )
        .prop_map(|(refuse, undo_failures)| Script { refuse, undo_failures })
}

struct World {
    test: SagaTest<Trip>,
    participants: Participants,
    scripts: HashMap<String, Script>,
    commands: Vec<Command>,
    replies: Vec<(Command, Message)>,
    delivered: Vec<(Command, Message)>,
}

impl World {
    async fn collect(&mut self) {
        self.commands.extend(self.test.sent().await.expect("sent"));
    }

    async fn deliver(&mut self) {
        if !self.commands.is_empty() {
            let command = self.commands.remove(0);
            let reply = self.participants.handle(&command, &self.scripts);
            self.replies.push((command, reply));
        }
    }

    async fn reply(&mut self, at: usize) {
        if !self.replies.is_empty() {
            let (command, reply) = self.replies.remove(at % self.replies.len());
            self.test.reply(&command, reply.clone()).await.expect("reply");
            self.delivered.push((command, reply));
            self.collect().await;
        }
    }

    async fn run(&mut self, op: Op) {
        match op {
            Op::Deliver => self.deliver().await,
            Op::Lose => {
                if !self.commands.is_empty() {
                    self.commands.remove(0);
                }
            }
            Op::Reply(at) => self.reply(at).await,
            Op::Duplicate(at) => {
                if !self.delivered.is_empty() {
                    let (command, reply) = self.delivered[at % self.delivered.len()].clone();
                    self.test.reply(&command, reply).await.expect("duplicate");
                    self.collect().await;
                }
            }
            Op::Advance(secs) => {
                self.test.advance(Duration::from_secs(secs)).await.expect("advance");
                self.collect().await;
            }
            Op::Restart => self.test.restart(saga()).await.expect("restart"),
        }
    }

    /// Delivers everything and lets time pass until nothing is left to do.
    async fn settle(&mut self) {
        for _ in 0..200 {
            // Everything in flight arrives before any time passes: only backoffs wait.
            while !self.commands.is_empty() || !self.replies.is_empty() {
                while !self.commands.is_empty() {
                    self.deliver().await;
                }
                while !self.replies.is_empty() {
                    self.reply(0).await;
                }
            }
            let all = self.test.orchestrator().list(None, 100).await.expect("list");
            if all.iter().all(|i| i.status.is_final() || i.status == Status::Parked) {
                return;
            }
            self.test.advance(Duration::from_secs(2)).await.expect("advance");
            self.collect().await;
        }
        panic!("the sagas did not settle");
    }
}

async fn check(instances: Vec<Script>, ops: Vec<Op>) -> Result<Vec<Status>, TestCaseError> {
    let mut statuses = Vec::new();
    let mut world = World {
        test: SagaTest::new(saga()).await.expect("harness"),
        participants: Participants::default(),
        scripts: HashMap::new(),
        commands: Vec::new(),
        replies: Vec::new(),
        delivered: Vec::new(),
    };
    for (k, script) in instances.iter().enumerate() {
        let id = format!("trip-{k}");
        world.scripts.insert(id.clone(), script.clone());
        world.test.start(&id, Trip { id: id.clone() }).await.expect("start");
    }
    world.collect().await;
    for op in ops {
        world.run(op).await;
    }
    world.settle().await;

    for (k, script) in instances.iter().enumerate() {
        let id = format!("trip-{k}");
        let view = world.test.instance(&id).await.expect("instance");
        let status = view.summary.status;
        let effects: Vec<(u32, u32)> = (0..STEPS)
            .map(|s| world.participants.effects.get(&(id.clone(), s)).copied().unwrap_or_default())
            .collect();
        for (s, (done, undone)) in effects.iter().enumerate() {
            prop_assert!(
                *done <= 1 && *undone <= 1,
                "{id} step {s}: effects {done}/{undone} (at most once each)"
            );
        }
        let order = world.participants.undo_order.get(&id).cloned().unwrap_or_default();
        prop_assert!(order.windows(2).all(|w| w[0] > w[1]), "{id}: compensations ran in order {order:?}");
        match status {
            Status::Completed => {
                prop_assert!(
                    script.refuse.is_none(),
                    "{id} completed although step {:?} refuses",
                    script.refuse
                );
                prop_assert!(effects.iter().all(|e| *e == (1, 0)), "{id} completed with effects {effects:?}");
            }
            Status::Compensated => {
                let took_effect: Vec<usize> = (0..STEPS).filter(|&s| effects[s].0 == 1).collect();
                let mut undone = took_effect.clone();
                undone.reverse();
                prop_assert_eq!(&order, &undone, "{} undid every step that took effect, last first", id);
            }
            Status::Parked => {
                // Parked only after a compensation was tried its full number of times (each
                // failed, or got no reply in time: its commands were lost or late).
                let step = view.summary.step.clone().unwrap_or_default();
                let s = ["book-flight", "book-hotel", "book-car"]
                    .iter()
                    .position(|n| *n == step)
                    .expect("a step");
                prop_assert_eq!(
                    view.summary.attempt,
                    MAX_COMPENSATION_ATTEMPTS,
                    "{} parked at {} early",
                    id,
                    step
                );
                prop_assert!(view.summary.compensating);
                prop_assert!(view.summary.error.is_some(), "a parked instance says why");
                // Everything above the parked step was undone already.
                for (above, e) in effects.iter().enumerate().skip(s + 1) {
                    prop_assert!(e.0 == e.1 || e.1 == 1, "{id} step {above} left undone: {e:?}");
                }
            }
            other => prop_assert!(false, "{id} did not settle: {other:?}"),
        }
        // The reference model: a refusing step can never complete; with no refusal and no
        // time passing before the settle, an instance completes.
        if script.refuse.is_some() {
            prop_assert!(status != Status::Completed);
        }
        statuses.push(status);
    }
    Ok(statuses)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn every_instance_ends_completed_compensated_or_parked_and_the_books_balance(
        instances in prop::collection::vec(script(), 1..4),
        ops in prop::collection::vec(op(), 0..60),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(check(instances, ops))?;
    }
}

#[test]
fn without_refusals_or_lost_time_every_instance_completes() {
    // The reference model's positive case: nothing refuses and nothing times out.
    let scripts = vec![Script { refuse: None, undo_failures: [0; STEPS] }; 3];
    let ops = vec![
        Op::Deliver,
        Op::Reply(0),
        Op::Duplicate(0),
        Op::Restart,
        Op::Deliver,
        Op::Deliver,
        Op::Reply(1),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let statuses = check(scripts, ops).await.expect("invariants");
        assert_eq!(statuses, [Status::Completed; 3]);
    });
}
