//! Freezes: an operator's hold on merges. While a freeze holds a queue key, nothing of that
//! key merges; intents are still validated and queued, and a merge that was waiting goes
//! ahead when the freeze ends (its window closes or it is lifted). A pause is a freeze without
//! a window, until lifted.
//!
//! A freeze covers a tenant's queue keys: one repository's or all of them, one target's or
//! all of them. Its window is "until lifted", a span (start, optional end), or a weekly span
//! in UTC that may wrap around the week's end ("Fri 16:00" to "Mon 08:00").

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::queue::QueueKey;

/// The longest reason kept.
pub const MAX_REASON_CHARS: usize = 500;

const MINUTES_PER_WEEK: u32 = 7 * 24 * 60;
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// A moment of the week in UTC, to the minute: `Fri 16:00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct WeekTime {
    /// Minutes since Monday 00:00.
    minute: u32,
}

impl WeekTime {
    /// Where `at` falls in its week.
    pub fn of(at: DateTime<Utc>) -> WeekTime {
        WeekTime {
            minute: at.weekday().num_days_from_monday() * 24 * 60 + at.hour() * 60 + at.minute(),
        }
    }
}

impl fmt::Display for WeekTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let day = DAYS[(self.minute / (24 * 60)) as usize % 7];
        let in_day = self.minute % (24 * 60);
        write!(f, "{day} {:02}:{:02}", in_day / 60, in_day % 60)
    }
}

impl FromStr for WeekTime {
    type Err = String;

    /// `Fri 16:00`: a day's English abbreviation (`Mon` … `Sun`), a space, a 24-hour time
    /// with two-digit hours and minutes (what [`WEEK_TIME_PATTERN`] says).
    fn from_str(text: &str) -> Result<WeekTime, String> {
        let wrong = || format!("'{text}' is not a day and a UTC time such as 'Fri 16:00'");
        let (day, time) = text.split_once(' ').ok_or_else(wrong)?;
        let index = DAYS.iter().position(|d| *d == day).ok_or_else(wrong)?;
        let (hour, minute) = time.split_once(':').ok_or_else(wrong)?;
        let two_digits = |part: &str, below: u32| {
            (part.len() == 2 && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u32>().ok())
                .flatten()
                .filter(|n| *n < below)
        };
        let hour = two_digits(hour, 24).ok_or_else(wrong)?;
        let minute = two_digits(minute, 60).ok_or_else(wrong)?;
        Ok(WeekTime {
            minute: index as u32 * 24 * 60 + hour * 60 + minute,
        })
    }
}

/// The regular expression of a [`WeekTime`] as text (exactly what its parser takes).
pub const WEEK_TIME_PATTERN: &str =
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([01][0-9]|2[0-3]):[0-5][0-9]$";

impl Serialize for WeekTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WeekTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// When a freeze holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Window {
    /// From its creation until lifted (a pause).
    UntilLifted,
    /// From `start`, until `end` (or until lifted when there is none).
    Span {
        /// When it starts holding.
        start: DateTime<Utc>,
        /// When it stops.
        end: Option<DateTime<Utc>>,
    },
    /// Every week from `from` to `to`, UTC (wrapping past Sunday when `to` comes first; the
    /// whole week when they are the same moment).
    Weekly {
        /// When it starts holding each week.
        from: WeekTime,
        /// When it stops.
        to: WeekTime,
    },
}

impl Window {
    /// Whether the window is open at `now`.
    pub fn covers(&self, now: DateTime<Utc>) -> bool {
        match self {
            Window::UntilLifted => true,
            Window::Span { start, end } => *start <= now && end.is_none_or(|end| now < end),
            Window::Weekly { from, to } => {
                let at = WeekTime::of(now);
                if from < to {
                    *from <= at && at < *to
                } else {
                    at >= *from || at < *to
                }
            }
        }
    }

    /// When the window next closes after `now`, if it ever does by itself (weekly windows
    /// close every week: the next close is given).
    pub fn closes_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Window::UntilLifted => None,
            Window::Span { end, .. } => *end,
            Window::Weekly { from, to } if from == to => None,
            Window::Weekly { to, .. } => {
                let at = WeekTime::of(now).minute;
                let ahead = (to.minute + MINUTES_PER_WEEK - at) % MINUTES_PER_WEEK;
                let ahead = if ahead == 0 { MINUTES_PER_WEEK } else { ahead };
                let minute_start = now
                    - Duration::seconds(i64::from(now.second()))
                    - Duration::nanoseconds(i64::from(now.nanosecond()));
                Some(minute_start + Duration::minutes(i64::from(ahead)))
            }
        }
    }

    /// Checks the window makes sense; the error names the field.
    pub fn check(&self) -> Result<(), FreezeError> {
        match self {
            Window::Span {
                start,
                end: Some(end),
            } if end <= start => Err(FreezeError::Field(
                "end",
                format!("must be after start ({start})"),
            )),
            _ => Ok(()),
        }
    }
}

/// What was wrong with a freeze as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FreezeError {
    /// A field's value (named) is unusable.
    #[error("{0}: {1}")]
    Field(&'static str, String),
}

/// An operator's hold on the merges of some queue keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    /// Unique id (`frz-…`).
    pub id: String,
    /// The tenant whose keys it covers (`None`: intents without a tenant).
    pub tenant_id: Option<String>,
    /// The repository (`owner/name`; empty: local intents); `None` covers every repository.
    pub repo: Option<String>,
    /// The target branch; `None` covers every target.
    pub target: Option<String>,
    /// Why, as shown to whoever waits (the check run, the dashboard).
    pub reason: String,
    /// When it holds.
    pub window: Window,
    /// Who set it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When it was lifted, if it was.
    pub lifted_at: Option<DateTime<Utc>>,
    /// Who lifted it.
    pub lifted_by: Option<String>,
}

impl Freeze {
    /// Checks what an operator asked for; the error names the field.
    pub fn check(&self) -> Result<(), FreezeError> {
        let reason = self.reason.trim();
        if reason.is_empty() {
            return Err(FreezeError::Field(
                "reason",
                "is required: it is what waiting authors are shown".to_owned(),
            ));
        }
        if reason.chars().count() > MAX_REASON_CHARS {
            return Err(FreezeError::Field(
                "reason",
                format!("at most {MAX_REASON_CHARS} characters"),
            ));
        }
        if self.target.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(FreezeError::Field(
                "target",
                "is empty (leave it out to cover every target)".to_owned(),
            ));
        }
        self.window.check()
    }

    /// Whether it covers `key` (whatever its window).
    pub fn covers(&self, key: &QueueKey) -> bool {
        self.tenant_id.as_deref().unwrap_or("") == key.tenant
            && self.repo.as_deref().is_none_or(|repo| repo == key.repo)
            && self
                .target
                .as_deref()
                .is_none_or(|target| target == key.target)
    }

    /// Whether it holds `key`'s merges at `now`.
    pub fn holds(&self, key: &QueueKey, now: DateTime<Utc>) -> bool {
        self.lifted_at.is_none_or(|lifted| now < lifted)
            && self.covers(key)
            && self.window.covers(now)
    }

    /// Whether it may still hold at some time from `now` on (not lifted, window not over).
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.lifted_at.is_none()
            && match &self.window {
                Window::Span { end: Some(end), .. } => now < *end,
                _ => true,
            }
    }

    /// What waiting authors are told: `Merges frozen: <reason> (until …)`.
    pub fn describe(&self, now: DateTime<Utc>) -> String {
        match self.window.closes_after(now) {
            Some(until) => format!(
                "Merges frozen: {} (until {})",
                self.reason.trim(),
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            None => format!("Merges frozen: {} (until lifted)", self.reason.trim()),
        }
    }
}

/// The first of `freezes` that holds `key` at `now`.
pub fn holding<'a>(
    freezes: &'a [Freeze],
    key: &QueueKey,
    now: DateTime<Utc>,
) -> Option<&'a Freeze> {
    freezes.iter().find(|f| f.holds(key, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn key(repo: &str, target: &str) -> QueueKey {
        QueueKey {
            tenant: "acme".to_owned(),
            repo: repo.to_owned(),
            target: target.to_owned(),
        }
    }

    fn freeze(window: Window) -> Freeze {
        Freeze {
            id: "frz-1".to_owned(),
            tenant_id: Some("acme".to_owned()),
            repo: Some("acme/app".to_owned()),
            target: None,
            reason: "release week".to_owned(),
            window,
            created_by: "ops".to_owned(),
            created_at: at(2026, 12, 1, 0, 0),
            lifted_at: None,
            lifted_by: None,
        }
    }

    #[test]
    fn a_weekend_freeze_wraps_past_sunday_and_says_when_it_ends() {
        let weekend = Window::Weekly {
            from: "Fri 16:00".parse().unwrap(),
            to: "Mon 08:00".parse().unwrap(),
        };
        // 2026-12-04 is a Friday.
        assert!(!weekend.covers(at(2026, 12, 4, 15, 59)));
        assert!(weekend.covers(at(2026, 12, 4, 16, 0)));
        assert!(weekend.covers(at(2026, 12, 6, 23, 0)));
        assert!(weekend.covers(at(2026, 12, 7, 7, 59)));
        assert!(!weekend.covers(at(2026, 12, 7, 8, 0)));
        assert!(!weekend.covers(at(2026, 12, 9, 12, 0)));
        assert_eq!(
            weekend.closes_after(at(2026, 12, 5, 10, 30)),
            Some(at(2026, 12, 7, 8, 0))
        );
        let text = serde_json::to_value(&weekend).unwrap();
        assert_eq!(
            text,
            serde_json::json!({"kind": "weekly", "from": "Fri 16:00", "to": "Mon 08:00"})
        );
        assert_eq!(serde_json::from_value::<Window>(text).unwrap(), weekend);
        let lunch = Window::Weekly {
            from: "Wed 12:00".parse().unwrap(),
            to: "Wed 13:30".parse().unwrap(),
        };
        assert!(lunch.covers(at(2026, 12, 2, 13, 0)));
        assert!(!lunch.covers(at(2026, 12, 2, 13, 30)));
    }

    #[test]
    fn a_freeze_holds_its_keys_only_inside_its_window_and_until_lifted() {
        let mut span = freeze(Window::Span {
            start: at(2026, 12, 4, 10, 0),
            end: Some(at(2026, 12, 4, 12, 0)),
        });
        let app_main = key("acme/app", "main");
        assert!(!span.holds(&app_main, at(2026, 12, 4, 9, 59)));
        assert!(span.holds(&app_main, at(2026, 12, 4, 10, 0)));
        assert!(span.holds(&key("acme/app", "release"), at(2026, 12, 4, 11, 0)));
        assert!(!span.holds(&key("acme/lib", "main"), at(2026, 12, 4, 11, 0)));
        let mut other_tenant = key("acme/app", "main");
        other_tenant.tenant = "globex".to_owned();
        assert!(!span.holds(&other_tenant, at(2026, 12, 4, 11, 0)));
        assert!(!span.holds(&app_main, at(2026, 12, 4, 12, 0)));
        assert!(span.is_live(at(2026, 12, 4, 11, 0)));
        assert!(!span.is_live(at(2026, 12, 4, 12, 0)));
        span.lifted_at = Some(at(2026, 12, 4, 10, 30));
        assert!(!span.holds(&app_main, at(2026, 12, 4, 11, 0)));
        let pause = freeze(Window::UntilLifted);
        assert_eq!(
            pause.describe(at(2026, 12, 4, 11, 0)),
            "Merges frozen: release week (until lifted)"
        );
        assert_eq!(
            holding(&[span, pause], &app_main, at(2026, 12, 4, 11, 0)).map(|f| &f.window),
            Some(&Window::UntilLifted)
        );
    }

    #[test]
    fn what_makes_no_sense_is_refused_naming_the_field() {
        let mut blank = freeze(Window::UntilLifted);
        blank.reason = "  ".to_owned();
        assert!(matches!(
            blank.check(),
            Err(FreezeError::Field("reason", _))
        ));
        let backwards = freeze(Window::Span {
            start: at(2026, 12, 4, 12, 0),
            end: Some(at(2026, 12, 4, 10, 0)),
        });
        assert!(matches!(
            backwards.check(),
            Err(FreezeError::Field("end", _))
        ));
        let whole_week = Window::Weekly {
            from: "Fri 16:00".parse().unwrap(),
            to: "Fri 16:00".parse().unwrap(),
        };
        assert!(whole_week.check().is_ok());
        assert!(whole_week.covers(at(2026, 12, 9, 3, 0)));
        assert!(whole_week.covers(at(2026, 12, 4, 16, 0)));
        assert_eq!(whole_week.closes_after(at(2026, 12, 9, 3, 0)), None);
        for bad in [
            "Fri",
            "Fry 16:00",
            "Fri 24:00",
            "Fri 16:60",
            "16:00 Fri",
            "Fridays 16:00",
            "fri 16:00",
            "Fri 6:00",
            "Fri  16:00",
            " Fri 16:00",
            "Fri 16:00 ",
        ] {
            assert!(bad.parse::<WeekTime>().is_err(), "{bad}");
        }
        for good in ["Mon 00:00", "Sun 23:59", "Wed 09:05"] {
            assert_eq!(good.parse::<WeekTime>().unwrap().to_string(), good);
        }
        assert!(freeze(Window::UntilLifted).check().is_ok());
    }
}
