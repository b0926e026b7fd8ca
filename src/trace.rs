//! The step recorder the decision code writes to: each step of a Check (path, resource, route,
//! credentials, token structure, issuer, key, signature, claims, body, MCP rules, scopes,
//! session) with its outcome. Off on the Check path (records and allocates nothing); on for
//! `mcp-authz explain`, which renders it. It sits below the decision code so that `check` and
//! `token` depend on it, and `explain` only on them.

use std::fmt::{Display, Write as _};

/// One recorded step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Step recorder. `Trace::off()` records nothing and allocates nothing.
#[derive(Debug, Default)]
pub struct Trace {
    enabled: bool,
    pub steps: Vec<Step>,
    /// `explain --claims`: validate this claims document instead of a signed token.
    pub offline_claims: Option<Vec<u8>>,
}

impl Trace {
    pub fn off() -> Trace {
        Trace::default()
    }

    pub fn on() -> Trace {
        Trace {
            enabled: true,
            ..Trace::default()
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    #[inline]
    pub fn ok(&mut self, name: &'static str, detail: impl FnOnce() -> String) {
        if self.enabled {
            self.steps.push(Step {
                name,
                ok: true,
                detail: detail(),
            });
        }
    }

    #[inline]
    pub fn fail(&mut self, name: &'static str, err: &dyn Display) {
        if self.enabled {
            self.steps.push(Step {
                name,
                ok: false,
                detail: err.to_string(),
            });
        }
    }

    /// Record `r` under `name` and pass it through.
    #[inline]
    pub fn check<T, E: Display>(
        &mut self,
        name: &'static str,
        r: Result<T, E>,
        ok: impl FnOnce(&T) -> String,
    ) -> Result<T, E> {
        if self.enabled {
            match &r {
                Ok(v) => self.ok(name, || ok(v)),
                Err(e) => self.fail(name, e),
            }
        }
        r
    }

    /// The steps as aligned text lines.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for s in &self.steps {
            let mark = if s.ok { "ok  " } else { "FAIL" };
            let _ = writeln!(out, "  {mark} {:<18} {}", s.name, s.detail);
        }
        out
    }
}
