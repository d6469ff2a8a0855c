//! The rule file's lexer, parser and compiler (hand-written recursive descent).
//!
//! Errors are collected rather than returned at the first: a bad rule is skipped up to its end and
//! parsing goes on, so one load reports every rule that needs fixing (up to [`MAX_ERRORS`]).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use proto::packet::{ipproto, Family};

use super::error::{Diag, ErrorKind, RuleError};
use super::{ports, Action, Bits, Chain, Hook, IfNames, Item, Ranges, Reject, Rule, RuleSet, Test, Verdict};
use crate::conntrack::l4::Proto;
use crate::conntrack::CtState;
use crate::timeouts::{Policy, PolicyRef, Registry};

/// Reporting stops after this many errors.
const MAX_ERRORS: usize = 20;

/// Longest interface name (`IFNAMSIZ` - 1).
const IFNAME_MAX: usize = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    line: u32,
    col: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    Word(&'a str),
    Str(&'a str),
    LBrace,
    RBrace,
    Comma,
    Semi,
    Newline,
    Eq,
    Neq,
    Eof,
}

impl Tok<'_> {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("`{w}`"),
            Tok::Str(s) => format!("\"{s}\""),
            Tok::LBrace => "`{`".into(),
            Tok::RBrace => "`}`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Semi => "`;`".into(),
            Tok::Newline => "end of line".into(),
            Tok::Eq => "`==`".into(),
            Tok::Neq => "`!=`".into(),
            Tok::Eof => "end of file".into(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    tok: Tok<'a>,
    pos: Pos,
    /// Byte span in the text.
    start: usize,
    end: usize,
}

fn diag(pos: Pos, kind: ErrorKind) -> Diag {
    Diag { line: pos.line, column: pos.col, kind }
}

fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '{' | '}' | '"' | ',' | ';' | '#' | '!' | '=' | '\\')
}

/// Splits `text` into tokens; the last is always `Eof`. Bad characters are reported and skipped.
fn lex<'a>(text: &'a str, diags: &mut Vec<Diag>) -> Vec<Token<'a>> {
    let mut toks = Vec::new();
    let mut it = text.char_indices().peekable();
    let (mut line, mut col) = (1u32, 1u32);
    while let Some(&(start, c)) = it.peek() {
        let pos = Pos { line, col };
        let mut push = |tok, end| toks.push(Token { tok, pos, start, end });
        it.next();
        col += 1;
        match c {
            '\n' => {
                push(Tok::Newline, start + 1);
                line += 1;
                col = 1;
            }
            '#' => while it.next_if(|&(_, c)| c != '\n').is_some() {},
            '{' => push(Tok::LBrace, start + 1),
            '}' => push(Tok::RBrace, start + 1),
            ',' => push(Tok::Comma, start + 1),
            ';' => push(Tok::Semi, start + 1),
            '\\' if it.next_if(|&(_, c)| c == '\n').is_some() => {
                line += 1;
                col = 1;
            }
            '!' | '=' if it.next_if(|&(_, c)| c == '=').is_some() => {
                col += 1;
                push(if c == '!' { Tok::Neq } else { Tok::Eq }, start + 2);
            }
            '"' => {
                let mut end = text.len();
                let mut closed = false;
                while let Some((i, c)) = it.next_if(|&(_, c)| c != '\n') {
                    col += 1;
                    if c == '"' {
                        end = i;
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    end = it.peek().map_or(text.len(), |&(i, _)| i);
                    diags.push(diag(pos, ErrorKind::UnterminatedString));
                }
                push(Tok::Str(&text[start + 1..end]), if closed { end + 1 } else { end });
            }
            c if c.is_whitespace() => {}
            c if is_word_char(c) => {
                let mut end = start + c.len_utf8();
                while let Some((i, c)) = it.next_if(|&(_, c)| is_word_char(c)) {
                    col += 1;
                    end = i + c.len_utf8();
                }
                push(Tok::Word(&text[start..end]), end);
            }
            c => diags.push(diag(pos, ErrorKind::BadChar(c))),
        }
    }
    let pos = Pos { line, col };
    toks.push(Token { tok: Tok::Eof, pos, start: text.len(), end: text.len() });
    toks
}

/// What a rule can still match, narrowed by each match: a contradiction empties a set.
struct Scope {
    protos: Bits,
    /// Bit 0: IPv4, bit 1: IPv6.
    families: u8,
}

fn family_bit(f: Family) -> u8 {
    match f {
        Family::V4 => 1,
        Family::V6 => 2,
    }
}

/// A rule under construction.
struct RuleBuild {
    items: Vec<Item>,
    refs: Vec<PolicyRef>,
    /// Policies named, with where, checked against the rule's protocols at its end.
    timeouts: Vec<(Arc<Policy>, Pos)>,
    counter: bool,
    verdict: bool,
    scope: Scope,
}

impl RuleBuild {
    fn narrow_protos(&mut self, set: Bits, at: Pos, what: &str) -> Result<(), Diag> {
        self.scope.protos = self.scope.protos.and(set);
        if self.scope.protos.is_empty() {
            return Err(diag(at, ErrorKind::ProtocolConflict(what.to_owned())));
        }
        Ok(())
    }

    fn narrow_family(&mut self, bits: u8, at: Pos, what: &str) -> Result<(), Diag> {
        self.scope.families &= bits;
        if self.scope.families == 0 {
            return Err(diag(at, ErrorKind::FamilyConflict(what.to_owned())));
        }
        Ok(())
    }
}

#[derive(Default)]
struct ChainBuild {
    hook: Option<Hook>,
    /// Where the hook was named (the chain name or the `type` line's hook).
    hook_pos: Option<Pos>,
    policy: Option<Verdict>,
    rules: Vec<Rule>,
}

struct Parser<'a, 'r> {
    text: &'a str,
    toks: Vec<Token<'a>>,
    i: usize,
    /// End of the last token taken.
    prev_end: usize,
    registry: &'r Registry,
    diags: Vec<Diag>,
    chains: [Option<Chain>; 4],
    policies: Vec<Arc<Policy>>,
}

/// Parses and compiles a rule file.
pub(super) fn parse(file: &str, text: &str, registry: &Registry) -> Result<RuleSet, RuleError> {
    let mut diags = Vec::new();
    let toks = lex(text, &mut diags);
    let mut p = Parser {
        text,
        toks,
        i: 0,
        prev_end: 0,
        registry,
        diags,
        chains: [None, None, None, None],
        policies: Vec::new(),
    };
    p.file();
    if !p.diags.is_empty() {
        let mut errors = p.diags;
        errors.sort_by_key(|d| (d.line, d.column));
        errors.truncate(MAX_ERRORS);
        if errors.len() == MAX_ERRORS {
            let last = errors[MAX_ERRORS - 1].clone();
            errors.push(Diag { kind: ErrorKind::TooManyErrors, ..last });
        }
        return Err(RuleError::Invalid { file: file.to_owned(), errors });
    }
    let [a, b, c, d] = p.chains;
    let chains = [a, b, c, d].map(|c| c.unwrap_or_else(Chain::accept_all));
    Ok(RuleSet { chains, policies: p.policies })
}

impl<'a> Parser<'a, '_> {
    fn peek(&self) -> Token<'a> {
        self.toks[self.i]
    }

    fn bump(&mut self) -> Token<'a> {
        let t = self.toks[self.i];
        if self.i + 1 < self.toks.len() {
            self.i += 1;
            self.prev_end = t.end;
        }
        t
    }

    fn error(&mut self, d: Diag) {
        self.diags.push(d);
    }

    fn too_many(&self) -> bool {
        self.diags.len() >= MAX_ERRORS
    }

    fn at_end(&self) -> bool {
        matches!(self.peek().tok, Tok::Newline | Tok::Semi | Tok::RBrace | Tok::Eof)
    }

    fn skip_separators(&mut self) {
        while matches!(self.peek().tok, Tok::Newline | Tok::Semi) {
            self.bump();
        }
    }

    fn skip_newlines(&mut self) {
        while self.peek().tok == Tok::Newline {
            self.bump();
        }
    }

    /// Skips the rest of a statement after an error: up to a separator outside braces (taken), or
    /// a `}` closing the enclosing block (left).
    fn recover(&mut self) {
        let mut depth = 0usize;
        loop {
            match self.peek().tok {
                Tok::Eof => return,
                Tok::Newline | Tok::Semi if depth == 0 => {
                    self.bump();
                    return;
                }
                Tok::RBrace if depth == 0 => return,
                Tok::RBrace => depth -= 1,
                Tok::LBrace => depth += 1,
                _ => {}
            }
            self.bump();
        }
    }

    fn unexpected(&self, expected: &'static str) -> Diag {
        let t = self.peek();
        diag(t.pos, ErrorKind::Expected { expected, found: t.tok.describe() })
    }

    /// Takes a word, or fails without taking anything.
    fn word(&mut self, expected: &'static str) -> Result<(&'a str, Pos), Diag> {
        match self.peek().tok {
            Tok::Word(w) => Ok((w, self.bump().pos)),
            _ => Err(self.unexpected(expected)),
        }
    }

    /// Takes the keyword `kw`.
    fn keyword(&mut self, kw: &'static str, expected: &'static str) -> Result<Pos, Diag> {
        match self.peek().tok {
            Tok::Word(w) if w == kw => Ok(self.bump().pos),
            Tok::Word(w) => Err(diag(self.peek().pos, ErrorKind::UnknownKeyword(w.to_owned()))),
            _ => Err(self.unexpected(expected)),
        }
    }

    /// A name: a word or a string.
    fn name(&mut self, expected: &'static str) -> Result<(&'a str, Pos), Diag> {
        match self.peek().tok {
            Tok::Word(w) | Tok::Str(w) => Ok((w, self.bump().pos)),
            _ => Err(self.unexpected(expected)),
        }
    }

    /// The end of a statement: a separator (taken) or a `}` / end of file (left).
    fn end_of_statement(&mut self) -> Result<(), Diag> {
        match self.peek().tok {
            Tok::Newline | Tok::Semi => {
                self.bump();
                Ok(())
            }
            Tok::RBrace | Tok::Eof => Ok(()),
            _ => Err(self.unexpected("end of statement")),
        }
    }

    /// `==` (or nothing) → false, `!=` → true.
    fn op(&mut self) -> bool {
        match self.peek().tok {
            Tok::Eq => {
                self.bump();
                false
            }
            Tok::Neq => {
                self.bump();
                true
            }
            _ => false,
        }
    }

    /// One value, a comma-separated list or a `{ … }` set; `elem` gets each word or string.
    fn values<T>(
        &mut self,
        expected: &'static str,
        mut elem: impl FnMut(&'a str, Pos) -> Result<T, Diag>,
    ) -> Result<Vec<T>, Diag> {
        let mut out = Vec::new();
        if self.peek().tok == Tok::LBrace {
            let open = self.bump().pos;
            loop {
                self.skip_newlines();
                match self.peek().tok {
                    Tok::RBrace => {
                        self.bump();
                        break;
                    }
                    Tok::Eof => return Err(diag(open, ErrorKind::Unclosed)),
                    _ => {}
                }
                let (w, pos) = self.name(expected)?;
                out.push(elem(w, pos)?);
                self.skip_newlines();
                match self.peek().tok {
                    Tok::Comma => {
                        self.bump();
                    }
                    Tok::RBrace => {}
                    Tok::Eof => return Err(diag(open, ErrorKind::Unclosed)),
                    _ => return Err(self.unexpected("`,` or `}`")),
                }
            }
            if out.is_empty() {
                return Err(diag(open, ErrorKind::EmptySet));
            }
        } else {
            loop {
                let (w, pos) = self.name(expected)?;
                out.push(elem(w, pos)?);
                if self.peek().tok != Tok::Comma {
                    break;
                }
                self.bump();
            }
        }
        Ok(out)
    }

    // ---- file structure ----

    fn file(&mut self) {
        self.blocks(false);
    }

    /// Chains (and at top level, tables) up to the end of file or, inside a table, its `}`.
    fn blocks(&mut self, in_table: bool) {
        loop {
            if self.too_many() {
                return;
            }
            self.skip_separators();
            let t = self.peek();
            match t.tok {
                Tok::Eof => return,
                Tok::RBrace if in_table => return,
                Tok::Word("chain") => {
                    self.bump();
                    self.chain();
                }
                // nft files often start so; loading a file replaces everything anyway.
                Tok::Word("flush") if self.toks.get(self.i + 1).map(|t| t.tok) == Some(Tok::Word("ruleset")) => {
                    self.bump();
                    self.bump();
                    if let Err(d) = self.end_of_statement() {
                        self.error(d);
                        self.recover();
                    }
                }
                Tok::Word("table") => {
                    self.bump();
                    if in_table {
                        self.error(diag(t.pos, ErrorKind::NestedTable));
                    }
                    self.table();
                }
                Tok::Word(w) => {
                    self.error(diag(t.pos, ErrorKind::UnknownKeyword(w.to_owned())));
                    self.skip_block();
                }
                _ => {
                    let d = self.unexpected(if in_table { "`chain` or `}`" } else { "`chain` or `table`" });
                    self.error(d);
                    self.bump();
                    self.skip_block();
                }
            }
        }
    }

    /// Skips an unknown top-level statement, with its `{ … }` block if it has one.
    fn skip_block(&mut self) {
        let mut depth = 0usize;
        loop {
            match self.peek().tok {
                Tok::Eof => return,
                Tok::Newline | Tok::Semi if depth == 0 => return,
                Tok::LBrace => depth += 1,
                Tok::RBrace if depth == 0 => return,
                Tok::RBrace => {
                    depth -= 1;
                    if depth == 0 {
                        self.bump();
                        return;
                    }
                }
                _ => {}
            }
            self.bump();
        }
    }

    /// `table inet NAME { chains }`, after `table`.
    fn table(&mut self) {
        let header = (|| {
            let (family, pos) = self.word("a table family")?;
            if family != "inet" {
                self.error(diag(pos, ErrorKind::UnsupportedFamily(family.to_owned())));
            }
            self.name("a table name")?;
            self.skip_newlines();
            if self.peek().tok != Tok::LBrace {
                return Err(self.unexpected("`{`"));
            }
            Ok(self.bump().pos)
        })();
        match header {
            Ok(open) => {
                self.blocks(true);
                if self.peek().tok == Tok::RBrace {
                    self.bump();
                } else if !self.too_many() {
                    self.error(diag(open, ErrorKind::Unclosed));
                }
            }
            Err(d) => {
                self.error(d);
                self.skip_block();
            }
        }
    }

    /// `chain NAME { … }`, after `chain`.
    fn chain(&mut self) {
        let header = (|| {
            let (name, pos) = self.name("a chain name")?;
            self.skip_newlines();
            if self.peek().tok != Tok::LBrace {
                return Err(self.unexpected("`{`"));
            }
            Ok((name, pos, self.bump().pos))
        })();
        let (name, name_pos, open) = match header {
            Ok(h) => h,
            Err(d) => {
                self.error(d);
                self.skip_block();
                return;
            }
        };
        let hook = Hook::from_name(name);
        let mut c = ChainBuild { hook, hook_pos: hook.map(|_| name_pos), ..ChainBuild::default() };
        let mut hook_reported = false;
        loop {
            if self.too_many() {
                return;
            }
            self.skip_separators();
            let t = self.peek();
            let r = match t.tok {
                Tok::RBrace => {
                    self.bump();
                    break;
                }
                Tok::Eof => {
                    self.error(diag(open, ErrorKind::Unclosed));
                    break;
                }
                Tok::Word("type") => {
                    self.bump();
                    self.chain_type(&mut c, t.pos)
                }
                Tok::Word("policy") => {
                    self.bump();
                    self.chain_policy(&mut c, t.pos)
                }
                _ => {
                    if c.hook.is_none() && !hook_reported {
                        hook_reported = true;
                        self.error(diag(name_pos, ErrorKind::UnknownHook(name.to_owned())));
                    }
                    let start = t.start;
                    match self.rule(c.hook) {
                        Ok((b, end)) => {
                            let text = self.text[start..end].trim().into();
                            let r = self.finish_rule(b, t.pos.line, text);
                            c.rules.push(r);
                            Ok(())
                        }
                        Err(d) => Err(d),
                    }
                }
            };
            if let Err(d) = r {
                self.error(d);
                self.recover();
            }
        }
        let Some(hook) = c.hook else {
            if !hook_reported {
                self.error(diag(name_pos, ErrorKind::UnknownHook(name.to_owned())));
            }
            return;
        };
        let slot = &mut self.chains[hook as usize];
        if slot.is_some() {
            let pos = c.hook_pos.unwrap_or(name_pos);
            self.error(diag(pos, ErrorKind::DuplicateHook(hook)));
            return;
        }
        *slot = Some(Chain { policy: c.policy.unwrap_or(Verdict::Accept), rules: c.rules.into_boxed_slice() });
    }

    /// `type filter hook HOOK priority P`, after `type`.
    fn chain_type(&mut self, c: &mut ChainBuild, at: Pos) -> Result<(), Diag> {
        if !c.rules.is_empty() {
            return Err(diag(at, ErrorKind::TypeAfterRules));
        }
        self.keyword("filter", "`filter`")?;
        self.keyword("hook", "`hook`")?;
        let (h, pos) = self.word("a hook")?;
        let hook = Hook::from_name(h).ok_or_else(|| diag(pos, ErrorKind::UnknownHook(h.to_owned())))?;
        self.keyword("priority", "`priority`")?;
        self.word("a priority")?;
        while let Tok::Word(_) = self.peek().tok {
            self.bump();
        }
        self.end_of_statement()?;
        c.hook = Some(hook);
        c.hook_pos = Some(pos);
        Ok(())
    }

    /// `policy accept|drop`, after `policy`.
    fn chain_policy(&mut self, c: &mut ChainBuild, at: Pos) -> Result<(), Diag> {
        let v = match self.peek().tok {
            Tok::Word("accept") => Verdict::Accept,
            Tok::Word("drop") => Verdict::Drop,
            _ => return Err(self.unexpected("`accept` or `drop`")),
        };
        self.bump();
        self.end_of_statement()?;
        if c.policy.replace(v).is_some() {
            return Err(diag(at, ErrorKind::DuplicatePolicy));
        }
        Ok(())
    }

    fn finish_rule(&mut self, b: RuleBuild, line: u32, text: Box<str>) -> Rule {
        for (p, _) in &b.timeouts {
            if !self.policies.iter().any(|q| Arc::ptr_eq(p, q)) {
                self.policies.push(p.clone());
            }
        }
        Rule {
            items: b.items.into_boxed_slice(),
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            has_counter: b.counter,
            line,
            text,
            _refs: b.refs.into_boxed_slice(),
        }
    }

    // ---- rules ----

    /// A rule, up to (and including) its separator. `hook` is `None` in a chain whose hook is
    /// unknown (an error already reported): hook restrictions are then not checked.
    /// Returns the rule and where its text ends (before the separator).
    fn rule(&mut self, hook: Option<Hook>) -> Result<(RuleBuild, usize), Diag> {
        let mut b = RuleBuild {
            items: Vec::new(),
            refs: Vec::new(),
            timeouts: Vec::new(),
            counter: false,
            verdict: false,
            scope: Scope { protos: Bits::ALL, families: 3 },
        };
        while !self.at_end() {
            let t = self.peek();
            if b.verdict {
                return Err(diag(t.pos, ErrorKind::AfterVerdict));
            }
            let (w, at) = self.word("a match or statement")?;
            self.statement(&mut b, hook, w, at)?;
        }
        for (p, at) in &b.timeouts {
            if !b.scope.protos.iter().any(|n| Proto::of(n) == p.proto) {
                let proto = proto_name(p.proto);
                return Err(diag(*at, ErrorKind::PolicyNeverApplies { policy: p.name.clone(), proto }));
            }
        }
        let text_end = self.prev_end;
        self.end_of_statement()?;
        Ok((b, text_end))
    }

    fn statement(&mut self, b: &mut RuleBuild, hook: Option<Hook>, w: &'a str, at: Pos) -> Result<(), Diag> {
        let not_in = |what: &'static str, why: &'static str, allowed: &dyn Fn(Hook) -> bool| match hook {
            Some(h) if !allowed(h) => Err(diag(at, ErrorKind::NotInHook { what, hook: h, why })),
            _ => Ok(()),
        };
        match w {
            "iifname" | "oifname" => {
                let oif = w == "oifname";
                if oif {
                    not_in("oifname", "the output interface is not known yet", &|h| {
                        !matches!(h, Hook::Prerouting | Hook::Input)
                    })?;
                } else {
                    not_in("iifname", "locally sent packets have no input interface", &|h| h != Hook::Output)?;
                }
                let neg = self.op();
                let names = IfNames(self.values("an interface name", ifname)?.into_boxed_slice());
                b.items.push(Item::Test(if oif { Test::Oif { neg, names } } else { Test::Iif { neg, names } }));
            }
            "ip" | "ip6" => {
                let v6 = w == "ip6";
                let family = if v6 { Family::V6 } else { Family::V4 };
                let (field, fpos) =
                    self.word(if v6 { "`saddr` or `daddr`" } else { "`saddr`, `daddr` or `protocol`" })?;
                let what = format!("{w} {field}");
                let dst = match field {
                    "saddr" => false,
                    "daddr" => true,
                    "protocol" if !v6 => {
                        b.narrow_family(family_bit(family), at, &what)?;
                        b.items.push(Item::Test(Test::Family { neg: false, family }));
                        return self.l4proto(b, at, &what);
                    }
                    f => return Err(diag(fpos, ErrorKind::UnknownKeyword(f.to_owned()))),
                };
                b.narrow_family(family_bit(family), at, &what)?;
                let neg = self.op();
                let test = if v6 {
                    Test::Addr6 { dst, neg, set: Ranges::new(self.values("an IPv6 address", addr6)?) }
                } else {
                    Test::Addr4 { dst, neg, set: Ranges::new(self.values("an IPv4 address", addr4)?) }
                };
                b.items.push(Item::Test(test));
            }
            "meta" => {
                let (field, fpos) = self.word("`l4proto`, `nfproto` or `mark`")?;
                match field {
                    "l4proto" => return self.l4proto(b, at, "meta l4proto"),
                    "nfproto" => {
                        let neg = self.op();
                        let fams = self.values("`ipv4` or `ipv6`", |w, pos| match w {
                            "ipv4" => Ok(Family::V4),
                            "ipv6" => Ok(Family::V6),
                            _ => Err(diag(pos, ErrorKind::UnknownFamily(w.to_owned()))),
                        })?;
                        let bits = fams.iter().fold(0, |a, &f| a | family_bit(f));
                        let bits = if neg { !bits & 3 } else { bits };
                        b.narrow_family(bits, at, "meta nfproto")?;
                        match bits {
                            1 => b.items.push(Item::Test(Test::Family { neg: false, family: Family::V4 })),
                            2 => b.items.push(Item::Test(Test::Family { neg: false, family: Family::V6 })),
                            _ => {}
                        }
                    }
                    "mark" => return self.mark(b),
                    f => return Err(diag(fpos, ErrorKind::UnknownKeyword(f.to_owned()))),
                }
            }
            "tcp" | "udp" | "udplite" | "sctp" | "th" => {
                let (field, fpos) = self.word("`sport` or `dport`")?;
                let dst = match field {
                    "sport" => false,
                    "dport" => true,
                    f => return Err(diag(fpos, ErrorKind::UnknownKeyword(f.to_owned()))),
                };
                let (protos, numbers): (u8, &[u8]) = match w {
                    "tcp" => (ports::TCP, &[ipproto::TCP]),
                    "udp" => (ports::UDP, &[ipproto::UDP]),
                    "udplite" => (ports::UDPLITE, &[ipproto::UDPLITE]),
                    "sctp" => (ports::SCTP, &[ipproto::SCTP]),
                    _ => (
                        ports::TCP | ports::UDP | ports::UDPLITE | ports::SCTP,
                        &[ipproto::TCP, ipproto::UDP, ipproto::UDPLITE, ipproto::SCTP],
                    ),
                };
                b.narrow_protos(Bits::of(numbers), at, &format!("{w} {field}"))?;
                let neg = self.op();
                let set = Ranges::new(self.values("a port", port_range)?);
                b.items.push(Item::Test(Test::Port { dst, neg, protos, set }));
            }
            "icmp" | "icmpv6" => {
                let v6 = w == "icmpv6";
                let (field, fpos) = self.word("`type`")?;
                if field != "type" {
                    return Err(diag(fpos, ErrorKind::UnknownKeyword(field.to_owned())));
                }
                let what = format!("{w} type");
                let (family, number) = if v6 { (Family::V6, ipproto::ICMPV6) } else { (Family::V4, ipproto::ICMP) };
                b.narrow_protos(Bits::of(&[number]), at, &what)?;
                b.narrow_family(family_bit(family), at, &what)?;
                let neg = self.op();
                let mut types = Bits::NONE;
                for (lo, hi) in self.values("an ICMP type", |w, pos| icmp_type(v6, w, pos))? {
                    for t in lo..=hi {
                        types.insert(t);
                    }
                }
                b.items.push(Item::Test(Test::Icmp { v6, neg, types }));
            }
            "ct" => {
                let (field, fpos) = self.word("`state` or `timeout`")?;
                match field {
                    "state" => {
                        not_in("ct state", "it runs before connection tracking", &|h| h != Hook::Prerouting)?;
                        let neg = self.op();
                        let mask = self.values("a ct state", ct_state)?.into_iter().fold(0, |a, s| a | s);
                        b.items.push(Item::Test(Test::CtState { neg, mask }));
                    }
                    "timeout" => {
                        not_in("ct timeout set", "it runs before connection tracking", &|h| h != Hook::Prerouting)?;
                        self.keyword("set", "`set`")?;
                        let (name, pos) = self.name("a policy name")?;
                        let existing = b.refs.iter().find(|r| r.policy().name == name).map(|r| r.policy().clone());
                        let policy = match existing {
                            Some(p) => p,
                            None => {
                                let r = self
                                    .registry
                                    .acquire(name)
                                    .ok_or_else(|| diag(pos, ErrorKind::UnknownPolicy(name.to_owned())))?;
                                let p = r.policy().clone();
                                b.refs.push(r);
                                p
                            }
                        };
                        b.timeouts.push((policy.clone(), at));
                        b.items.push(Item::Timeout(policy));
                    }
                    f => return Err(diag(fpos, ErrorKind::UnknownKeyword(f.to_owned()))),
                }
            }
            "counter" => {
                if std::mem::replace(&mut b.counter, true) {
                    return Err(diag(at, ErrorKind::DuplicateCounter));
                }
                if let Tok::Word("packets") = self.peek().tok {
                    self.bump();
                    self.number::<u64>()?;
                    self.keyword("bytes", "`bytes`")?;
                    self.number::<u64>()?;
                }
                b.items.push(Item::Counter);
            }
            "notrack" => {
                not_in("notrack", "only prerouting runs before connection tracking", &|h| h == Hook::Prerouting)?;
                b.items.push(Item::Notrack);
            }
            "mark" => return self.mark(b),
            "accept" | "drop" => {
                b.verdict = true;
                b.items.push(Item::Verdict(if w == "accept" { Action::Accept } else { Action::Drop }));
            }
            "reject" => {
                let action = if let Tok::Word("with") = self.peek().tok {
                    self.bump();
                    let (kind, kpos) = self.word("`tcp`, `icmp`, `icmpv6` or `icmpx`")?;
                    match kind {
                        "tcp" => {
                            self.keyword("reset", "`reset`")?;
                            let tcp = Bits::of(&[ipproto::TCP]);
                            b.narrow_protos(tcp, kpos, "reject with tcp reset")?;
                            b.items.push(Item::Test(Test::L4Proto { neg: false, set: tcp }));
                            Action::Reject(Reject::TcpReset)
                        }
                        "icmp" | "icmpv6" | "icmpx" => {
                            self.keyword("type", "`type`")?;
                            self.keyword("port-unreachable", "`port-unreachable`")?;
                            match kind {
                                "icmp" => {
                                    b.narrow_family(1, kpos, "reject with icmp")?;
                                    b.items.push(Item::Test(Test::Family { neg: false, family: Family::V4 }));
                                    Action::Reject(Reject::IcmpPortUnreachable)
                                }
                                "icmpv6" => {
                                    b.narrow_family(2, kpos, "reject with icmpv6")?;
                                    b.items.push(Item::Test(Test::Family { neg: false, family: Family::V6 }));
                                    Action::Reject(Reject::Icmpv6PortUnreachable)
                                }
                                _ => Action::RejectIcmpx,
                            }
                        }
                        k => return Err(diag(kpos, ErrorKind::UnknownKeyword(k.to_owned()))),
                    }
                } else {
                    Action::RejectAuto
                };
                b.verdict = true;
                b.items.push(Item::Verdict(action));
            }
            w => return Err(diag(at, ErrorKind::UnknownKeyword(w.to_owned()))),
        }
        Ok(())
    }

    /// The value of `meta l4proto` / `ip protocol`.
    fn l4proto(&mut self, b: &mut RuleBuild, at: Pos, what: &str) -> Result<(), Diag> {
        let neg = self.op();
        let set = Bits::of(&self.values("a protocol", protocol)?);
        b.narrow_protos(if neg { set.not() } else { set }, at, what)?;
        b.items.push(Item::Test(Test::L4Proto { neg, set }));
        Ok(())
    }

    /// `set N` after `mark` / `meta mark`.
    fn mark(&mut self, b: &mut RuleBuild) -> Result<(), Diag> {
        self.keyword("set", "`set`")?;
        let m = self.number::<u32>()?;
        b.items.push(Item::Mark(m));
        Ok(())
    }

    /// A decimal or `0x` hexadecimal number.
    fn number<T: TryFrom<u64>>(&mut self) -> Result<T, Diag> {
        let (w, pos) = self.word("a number")?;
        let bad = || diag(pos, ErrorKind::BadNumber(w.to_owned()));
        let n = match w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
            Some(h) if !h.is_empty() && h.bytes().all(|c| c.is_ascii_hexdigit()) => u64::from_str_radix(h, 16),
            None if !w.is_empty() && w.bytes().all(|c| c.is_ascii_digit()) => w.parse(),
            _ => return Err(bad()),
        };
        n.ok().and_then(|n| T::try_from(n).ok()).ok_or_else(bad)
    }
}

// ---- values ----

fn ifname(w: &str, pos: Pos) -> Result<(Box<str>, bool), Diag> {
    let (name, prefix) = match w.strip_suffix('*') {
        Some(n) => (n, true),
        None => (w, false),
    };
    if name.len() > IFNAME_MAX {
        return Err(diag(pos, ErrorKind::InterfaceNameTooLong(w.to_owned())));
    }
    Ok((name.into(), prefix))
}

/// An address, `addr/len` or `lo-hi`, as an inclusive range of `bits`-bit integers.
fn addr_range<A: FromStr>(w: &str, pos: Pos, bits: u32, to_int: impl Fn(A) -> u128) -> Result<(u128, u128), Diag> {
    let bad = || diag(pos, ErrorKind::BadAddress(w.to_owned()));
    let parse = |s: &str| s.parse::<A>().map(&to_int).map_err(|_| bad());
    if let Some((a, len)) = w.split_once('/') {
        let a = parse(a)?;
        let len: u32 = match len.parse() {
            Ok(l) if l <= bits && len.bytes().all(|c| c.is_ascii_digit()) => l,
            _ => return Err(diag(pos, ErrorKind::BadPrefix(w.to_owned()))),
        };
        let all = if bits == 128 { u128::MAX } else { (1u128 << bits) - 1 };
        let host = all.checked_shr(len).unwrap_or(0);
        Ok((a & !host & all, (a & !host & all) | host))
    } else if let Some((lo, hi)) = w.split_once('-') {
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        if lo > hi {
            return Err(diag(pos, ErrorKind::BadRange(w.to_owned())));
        }
        Ok((lo, hi))
    } else {
        let a = parse(w)?;
        Ok((a, a))
    }
}

fn addr4(w: &str, pos: Pos) -> Result<(u32, u32), Diag> {
    let (lo, hi) = addr_range::<Ipv4Addr>(w, pos, 32, |a| u128::from(u32::from(a)))?;
    // Both fit: the range is within 32 bits.
    Ok((lo as u32, hi as u32))
}

fn addr6(w: &str, pos: Pos) -> Result<(u128, u128), Diag> {
    addr_range::<Ipv6Addr>(w, pos, 128, u128::from)
}

/// Service names nft resolves through `/etc/services`, the common ones.
const SERVICES: &[(&str, u16)] = &[
    ("ftp-data", 20),
    ("ftp", 21),
    ("ssh", 22),
    ("telnet", 23),
    ("smtp", 25),
    ("domain", 53),
    ("bootps", 67),
    ("bootpc", 68),
    ("tftp", 69),
    ("http", 80),
    ("pop3", 110),
    ("ntp", 123),
    ("imap", 143),
    ("snmp", 161),
    ("ldap", 389),
    ("https", 443),
    ("submission", 587),
    ("imaps", 993),
    ("pop3s", 995),
];

fn port(w: &str, whole: &str, pos: Pos) -> Result<u16, Diag> {
    if !w.is_empty() && w.bytes().all(|c| c.is_ascii_digit()) {
        return w.parse::<u16>().map_err(|_| diag(pos, ErrorKind::PortOutOfRange(w.to_owned())));
    }
    SERVICES
        .iter()
        .find(|(n, _)| *n == w)
        .map(|&(_, p)| p)
        .ok_or_else(|| diag(pos, ErrorKind::BadPort(whole.to_owned())))
}

fn port_range(w: &str, pos: Pos) -> Result<(u16, u16), Diag> {
    if let Some(p) = SERVICES.iter().find(|(n, _)| *n == w) {
        return Ok((p.1, p.1));
    }
    match w.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (port(lo, w, pos)?, port(hi, w, pos)?);
            if lo > hi {
                return Err(diag(pos, ErrorKind::BadRange(w.to_owned())));
            }
            Ok((lo, hi))
        }
        None => port(w, w, pos).map(|p| (p, p)),
    }
}

/// ICMP type names nft uses, and iptables' where they differ.
const ICMP_TYPES: &[(&str, u8)] = &[
    ("echo-reply", 0),
    ("destination-unreachable", 3),
    ("source-quench", 4),
    ("redirect", 5),
    ("echo-request", 8),
    ("router-advertisement", 9),
    ("router-solicitation", 10),
    ("time-exceeded", 11),
    ("parameter-problem", 12),
    ("timestamp-request", 13),
    ("timestamp-reply", 14),
    ("info-request", 15),
    ("info-reply", 16),
    ("address-mask-request", 17),
    ("address-mask-reply", 18),
];

const ICMPV6_TYPES: &[(&str, u8)] = &[
    ("destination-unreachable", 1),
    ("packet-too-big", 2),
    ("time-exceeded", 3),
    ("parameter-problem", 4),
    ("echo-request", 128),
    ("echo-reply", 129),
    ("mld-listener-query", 130),
    ("mld-listener-report", 131),
    ("mld-listener-done", 132),
    ("mld-listener-reduction", 132),
    ("nd-router-solicit", 133),
    ("nd-router-advert", 134),
    ("nd-neighbor-solicit", 135),
    ("nd-neighbor-advert", 136),
    ("nd-redirect", 137),
    ("router-renumbering", 138),
    ("ind-neighbor-solicit", 141),
    ("ind-neighbor-advert", 142),
    ("mld2-listener-report", 143),
    // ip6tables' names.
    ("router-solicitation", 133),
    ("router-advertisement", 134),
    ("neighbour-solicitation", 135),
    ("neighbor-solicitation", 135),
    ("neighbour-advertisement", 136),
    ("neighbor-advertisement", 136),
    ("redirect", 137),
];

fn icmp_type(v6: bool, w: &str, pos: Pos) -> Result<(u8, u8), Diag> {
    let table = if v6 { ICMPV6_TYPES } else { ICMP_TYPES };
    let unknown = || diag(pos, ErrorKind::UnknownIcmpType(w.to_owned()));
    let one = |s: &str| {
        table
            .iter()
            .find(|(n, _)| *n == s)
            .map(|&(_, t)| t)
            .or_else(|| s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse::<u8>().ok()).flatten())
    };
    if let Some(t) = one(w) {
        return Ok((t, t));
    }
    let (lo, hi) = w.split_once('-').ok_or_else(unknown)?;
    let (lo, hi) = (one(lo).ok_or_else(unknown)?, one(hi).ok_or_else(unknown)?);
    if lo > hi {
        return Err(diag(pos, ErrorKind::BadRange(w.to_owned())));
    }
    Ok((lo, hi))
}

const PROTOCOLS: &[(&str, u8)] = &[
    ("icmp", ipproto::ICMP),
    ("igmp", 2),
    ("tcp", ipproto::TCP),
    ("udp", ipproto::UDP),
    ("dccp", 33),
    ("gre", ipproto::GRE),
    ("esp", ipproto::ESP),
    ("ah", ipproto::AH),
    ("icmpv6", ipproto::ICMPV6),
    ("ipv6-icmp", ipproto::ICMPV6),
    ("sctp", ipproto::SCTP),
    ("udplite", ipproto::UDPLITE),
];

fn protocol(w: &str, pos: Pos) -> Result<u8, Diag> {
    PROTOCOLS
        .iter()
        .find(|(n, _)| *n == w)
        .map(|&(_, p)| p)
        .or_else(|| w.bytes().all(|c| c.is_ascii_digit()).then(|| w.parse::<u8>().ok()).flatten())
        .ok_or_else(|| diag(pos, ErrorKind::UnknownProtocol(w.to_owned())))
}

fn ct_state(w: &str, pos: Pos) -> Result<u8, Diag> {
    let s = match w {
        "new" => CtState::New,
        "established" => CtState::Established,
        "related" => CtState::Related,
        "invalid" => CtState::Invalid,
        "untracked" => CtState::Untracked,
        _ => return Err(diag(pos, ErrorKind::UnknownState(w.to_owned()))),
    };
    Ok(super::state_bit(s))
}

fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::Generic => "the generic protocol (no tracker of its own)",
        p => Proto::name_of(p.number()),
    }
}
