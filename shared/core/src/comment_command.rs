//! Commands in pull request comments: `@converge queue`, `dequeue`, `priority N`, `retry`
//! and `status`, and what each does to the pull request's intent.
//!
//! A comment speaks to Converge when one of its lines starts with `@converge` (any case) as a
//! whole name (`@convergence` or `@converge-bot` is someone else; `@converge:` is Converge);
//! the first such line is the command. Who may give commands (write permission on the
//! repository) is the adapter's to check; this module only reads the command and decides
//! its effect, which the caller records like any other decision.

use serde_json::{Value, json};

use crate::event::EventType;
use crate::intent::{Intent, Status};

/// How a comment addresses Converge.
pub const MENTION: &str = "@converge";

/// Lowest and highest priority a command may set (lower goes first).
pub const PRIORITIES: std::ops::RangeInclusive<i64> = 0..=9;

/// A command given in a comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Put the intent (back) in the queue: a rejected one comes back as READY.
    Queue,
    /// Take the intent out of the queue (REJECTED, with who asked).
    Dequeue,
    /// Set its queue priority.
    Priority(i64),
    /// Start its retries again (and bring a rejected one back).
    Retry,
    /// Answer with where it stands.
    Status,
}

impl Command {
    /// The command's word.
    pub fn name(self) -> &'static str {
        match self {
            Command::Queue => "queue",
            Command::Dequeue => "dequeue",
            Command::Priority(_) => "priority",
            Command::Retry => "retry",
            Command::Status => "status",
        }
    }
}

/// What a command does to an intent.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Events to record about the intent (the queue then looks at it again).
    Events(Vec<(EventType, Value)>),
    /// Nothing to change, and why.
    Nothing(String),
}

/// The command a comment gives: `None` when it does not speak to Converge, an error naming
/// what is wrong when it does but says nothing Converge knows.
pub fn parse(body: &str) -> Option<Result<Command, String>> {
    let rest = body.lines().map(str::trim).find_map(|line| {
        let rest = line
            .get(..MENTION.len())
            .filter(|start| start.eq_ignore_ascii_case(MENTION))
            .and_then(|_| line.get(MENTION.len()..))?;
        // A longer name (a GitHub login goes on with letters, digits or hyphens) is not us.
        let longer_name = rest
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        (!longer_name).then_some(rest)
    })?;
    let mut words = rest.trim_start_matches([':', ',']).split_whitespace();
    let word = words.next().map(str::to_ascii_lowercase);
    let command = match word.as_deref() {
        Some("queue") => Ok(Command::Queue),
        Some("dequeue") => Ok(Command::Dequeue),
        Some("retry") => Ok(Command::Retry),
        Some("status") => Ok(Command::Status),
        Some("priority") => match words.next().map(str::parse::<i64>) {
            Some(Ok(n)) if PRIORITIES.contains(&n) => Ok(Command::Priority(n)),
            Some(_) | None => Err(format!(
                "priority needs a number from {} to {} (lower goes first)",
                PRIORITIES.start(),
                PRIORITIES.end()
            )),
        },
        Some(other) => Err(format!(
            "unknown command '{other}' (queue, dequeue, priority N, retry, status)"
        )),
        None => Err("no command given (queue, dequeue, priority N, retry, status)".to_owned()),
    };
    Some(command)
}

/// What `command`, given by `by`, does to `intent`.
pub fn effect(intent: &Intent, command: Command, by: &str) -> Effect {
    let terminal = intent.status.is_terminal();
    match command {
        Command::Status => Effect::Nothing(status_line(intent)),
        Command::Queue | Command::Retry if intent.status == Status::Merged => {
            Effect::Nothing("already merged".to_owned())
        }
        Command::Queue | Command::Retry if intent.status == Status::Rejected => {
            Effect::Events(vec![(
                EventType::QueueReset,
                json!({"new_status": "READY", "by": by, "via": "comment", "command": command.name(),
                       "previous_retries": intent.retries}),
            )])
        }
        Command::Queue => Effect::Nothing(format!("already in the queue ({})", intent.status)),
        Command::Retry if intent.retries == 0 => {
            Effect::Nothing(format!("no retries spent ({})", intent.status))
        }
        Command::Retry => Effect::Events(vec![(
            EventType::QueueReset,
            json!({"by": by, "via": "comment", "command": "retry",
                   "previous_retries": intent.retries}),
        )]),
        Command::Dequeue if terminal => Effect::Nothing(format!("already {}", intent.status)),
        Command::Dequeue => Effect::Events(vec![(
            EventType::IntentRejected,
            json!({"reason": format!("taken out of the queue by @{by}"), "cause": "dequeued",
                   "retries": intent.retries, "by": by}),
        )]),
        Command::Priority(_) if terminal => Effect::Nothing(format!("already {}", intent.status)),
        Command::Priority(n) if n == intent.priority => {
            Effect::Nothing(format!("priority is already {n}"))
        }
        Command::Priority(n) => Effect::Events(vec![(
            EventType::IntentPriorityChanged,
            json!({"priority": n, "previous": intent.priority, "by": by, "via": "comment"}),
        )]),
    }
}

/// One line on where an intent stands (the answer to `status`).
pub fn status_line(intent: &Intent) -> String {
    format!(
        "Converge intent `{}`: {} (retries {}, priority {}, target `{}`)",
        intent.id, intent.status, intent.retries, intent.priority, intent.target
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn intent(status: Status, retries: u32) -> Intent {
        let mut intent = Intent::new("pr-1", "feature", "main", chrono::DateTime::default());
        intent.status = status;
        intent.retries = retries;
        intent
    }

    #[test]
    fn commands_are_read_from_the_first_line_that_speaks_to_converge() {
        assert_eq!(parse("LGTM"), None);
        assert_eq!(
            parse("thanks @converge"),
            None,
            "a mention inside a line is no command"
        );
        assert_eq!(parse("@converge queue"), Some(Ok(Command::Queue)));
        assert_eq!(parse("@converge: queue"), Some(Ok(Command::Queue)));
        assert_eq!(parse("@Converge, retry"), Some(Ok(Command::Retry)));
        assert_eq!(
            parse("@convergence queue"),
            None,
            "another name that starts like ours is no command"
        );
        assert_eq!(parse("@converge-bot queue\n@converge_x status"), None);
        assert_eq!(
            parse("@converge-bot queue\n@converge status"),
            Some(Ok(Command::Status)),
            "the first line that speaks to Converge is the command"
        );
        assert_eq!(
            parse("Ready.\n  @Converge Priority 1 please"),
            Some(Ok(Command::Priority(1)))
        );
        assert_eq!(
            parse("@converge dequeue\n@converge queue"),
            Some(Ok(Command::Dequeue))
        );
        assert!(matches!(parse("@converge priority 12"), Some(Err(e)) if e.contains("0 to 9")));
        assert!(matches!(parse("@converge merge"), Some(Err(e)) if e.contains("'merge'")));
        assert!(matches!(parse("@converge"), Some(Err(e)) if e.contains("no command")));
    }

    #[test]
    fn each_command_moves_only_what_it_says() {
        let rejected = intent(Status::Rejected, 3);
        assert!(matches!(
            effect(&rejected, Command::Queue, "ann"),
            Effect::Events(e) if e[0].0 == EventType::QueueReset && e[0].1["new_status"] == "READY"
        ));
        let queued = intent(Status::Queued, 1);
        assert!(matches!(
            effect(&queued, Command::Queue, "ann"),
            Effect::Nothing(_)
        ));
        assert!(matches!(
            effect(&queued, Command::Retry, "ann"),
            Effect::Events(e) if e[0].0 == EventType::QueueReset && e[0].1.get("new_status").is_none()
        ));
        assert!(matches!(
            effect(&queued, Command::Dequeue, "ann"),
            Effect::Events(e) if e[0].0 == EventType::IntentRejected && e[0].1["cause"] == "dequeued"
        ));
        assert!(matches!(
            effect(&queued, Command::Priority(1), "ann"),
            Effect::Events(e) if e[0].1["priority"] == 1
        ));
        let merged = intent(Status::Merged, 0);
        for command in [
            Command::Queue,
            Command::Retry,
            Command::Dequeue,
            Command::Priority(1),
        ] {
            assert!(
                matches!(effect(&merged, command, "ann"), Effect::Nothing(_)),
                "{command:?}"
            );
        }
        match effect(&queued, Command::Status, "ann") {
            Effect::Nothing(line) => assert!(line.contains("QUEUED") && line.contains("retries 1")),
            other => panic!("{other:?}"),
        }
    }
}
