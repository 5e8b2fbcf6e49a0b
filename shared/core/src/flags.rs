//! Feature flags: named switches over behaviour that operators may flip at run time. Only
//! flags that the code reads exist here; each has a default used until an operator sets it.

/// A known flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag {
    /// Stable name.
    pub name: &'static str,
    /// Value until an operator sets one.
    pub default: bool,
    /// What it switches.
    pub description: &'static str,
}

/// Move an intent's risk level when its risk score classifies differently (validation).
pub const RISK_AUTO_CLASSIFY: Flag = Flag {
    name: "risk_auto_classify",
    default: true,
    description: "Move an intent's risk level when its risk score classifies differently, and require the new level's checks.",
};

/// Every known flag, by name.
pub const ALL: &[Flag] = &[RISK_AUTO_CLASSIFY];

/// The known flag of that name.
pub fn find(name: &str) -> Option<Flag> {
    ALL.iter().copied().find(|f| f.name == name)
}
