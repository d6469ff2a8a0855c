//! Why a rule file was refused.

use std::fmt;

use super::Hook;

/// A rule file that could not be read or compiled.
#[derive(Debug)]
pub enum RuleError {
    /// The file could not be read.
    Read { file: String, source: std::io::Error },
    /// The file has errors: at least one, sorted by position.
    Invalid { file: String, errors: Vec<Diag> },
}

impl RuleError {
    /// The positioned errors (none for [`RuleError::Read`]).
    pub fn errors(&self) -> &[Diag] {
        match self {
            RuleError::Read { .. } => &[],
            RuleError::Invalid { errors, .. } => errors,
        }
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleError::Read { file, source } => write!(f, "{file}: cannot read: {source}"),
            RuleError::Invalid { file, errors } => {
                for (i, d) in errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    write!(f, "{file}:{d}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for RuleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RuleError::Read { source, .. } => Some(source),
            RuleError::Invalid { .. } => None,
        }
    }
}

/// One error at a position: line and column count from 1, columns in characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub line: u32,
    pub column: u32,
    pub kind: ErrorKind,
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.kind)
    }
}

/// What is wrong. Strings are the offending text as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// A character that cannot start a token.
    BadChar(char),
    UnterminatedString,
    /// A `{` without its `}`.
    Unclosed,
    /// Something other than what the grammar allows here.
    Expected {
        expected: &'static str,
        found: String,
    },
    /// A word that is no keyword of the place it is in.
    UnknownKeyword(String),
    /// A chain name that is no hook, without a `type filter hook` line.
    UnknownHook(String),
    DuplicateHook(Hook),
    /// `policy` given twice in a chain.
    DuplicatePolicy,
    /// `type … hook` after the chain's first rule.
    TypeAfterRules,
    /// A `table` of another family than `inet`.
    UnsupportedFamily(String),
    NestedTable,
    BadAddress(String),
    BadPrefix(String),
    /// A range whose low end is above its high end.
    BadRange(String),
    BadNumber(String),
    BadPort(String),
    PortOutOfRange(String),
    UnknownIcmpType(String),
    UnknownProtocol(String),
    UnknownState(String),
    UnknownFamily(String),
    InterfaceNameTooLong(String),
    EmptySet,
    /// `ct timeout set` of a policy the registry does not have.
    UnknownPolicy(String),
    /// This match's protocol contradicts an earlier match of the rule.
    ProtocolConflict(String),
    /// This match's address family contradicts an earlier match of the rule.
    FamilyConflict(String),
    /// `ct timeout set` of a policy whose protocol the rule can never match.
    PolicyNeverApplies {
        policy: String,
        proto: &'static str,
    },
    /// A match or statement the hook does not allow.
    NotInHook {
        what: &'static str,
        hook: Hook,
        why: &'static str,
    },
    /// A statement after the rule's verdict.
    AfterVerdict,
    DuplicateCounter,
    /// More errors follow; reporting stopped.
    TooManyErrors,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::BadChar(c) => write!(f, "unexpected character {c:?}"),
            ErrorKind::UnterminatedString => f.write_str("string not closed before the end of the line"),
            ErrorKind::Unclosed => f.write_str("`{` is never closed"),
            ErrorKind::Expected { expected, found } => write!(f, "expected {expected}, found {found}"),
            ErrorKind::UnknownKeyword(w) => write!(f, "unknown keyword `{w}`"),
            ErrorKind::UnknownHook(w) => write!(
                f,
                "chain `{w}` is not a hook (prerouting, input, forward, output) and has no `type filter hook …`"
            ),
            ErrorKind::DuplicateHook(h) => write!(f, "a chain for hook {h} was already given"),
            ErrorKind::DuplicatePolicy => f.write_str("the chain's policy was already given"),
            ErrorKind::TypeAfterRules => f.write_str("`type filter hook …` must come before the chain's rules"),
            ErrorKind::UnsupportedFamily(w) => write!(f, "table family `{w}` is not supported (only `inet`)"),
            ErrorKind::NestedTable => f.write_str("a table cannot be inside a table"),
            ErrorKind::BadAddress(w) => write!(f, "bad address `{w}`"),
            ErrorKind::BadPrefix(w) => write!(f, "bad prefix length in `{w}`"),
            ErrorKind::BadRange(w) => write!(f, "range `{w}` ends before it starts"),
            ErrorKind::BadNumber(w) => write!(f, "bad number `{w}`"),
            ErrorKind::BadPort(w) => write!(f, "bad port `{w}`"),
            ErrorKind::PortOutOfRange(w) => write!(f, "port `{w}` out of range (0-65535)"),
            ErrorKind::UnknownIcmpType(w) => write!(f, "unknown ICMP type `{w}`"),
            ErrorKind::UnknownProtocol(w) => write!(f, "unknown protocol `{w}`"),
            ErrorKind::UnknownState(w) => {
                write!(f, "unknown ct state `{w}` (new, established, related, invalid, untracked)")
            }
            ErrorKind::UnknownFamily(w) => write!(f, "unknown family `{w}` (ipv4, ipv6)"),
            ErrorKind::InterfaceNameTooLong(w) => write!(f, "interface name `{w}` is longer than 15 bytes"),
            ErrorKind::EmptySet => f.write_str("empty set"),
            ErrorKind::UnknownPolicy(w) => write!(f, "no timeout policy named \"{w}\""),
            ErrorKind::ProtocolConflict(w) => write!(f, "`{w}` contradicts the protocol of an earlier match"),
            ErrorKind::FamilyConflict(w) => write!(f, "`{w}` contradicts the address family of an earlier match"),
            ErrorKind::PolicyNeverApplies { policy, proto } => {
                write!(f, "timeout policy \"{policy}\" is for {proto}, which this rule never matches")
            }
            ErrorKind::NotInHook { what, hook, why } => write!(f, "`{what}` is not allowed in {hook} ({why})"),
            ErrorKind::AfterVerdict => f.write_str("nothing may follow the rule's verdict"),
            ErrorKind::DuplicateCounter => f.write_str("the rule already has a counter"),
            ErrorKind::TooManyErrors => f.write_str("too many errors; stopping"),
        }
    }
}
