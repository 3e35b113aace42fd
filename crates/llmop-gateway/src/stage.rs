//! The names of a call's stages, in the order the pipeline runs them. The conductor
//! (`pipeline`) marks each stage on the call's record as it enters it, so a record says
//! how far its call went (`stages` in `GET /v1/requests/{id}`).

/// One stage of a call. The discriminants are the pipeline's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Who calls: the client key (or the primary's key, for a shadow).
    Authenticate = 0,
    /// Request id and call metadata (`x-llmop-*`).
    Context,
    /// The body, read (bounded) and parsed in the entry point's format.
    Parse,
    /// The key's scope: may it call this model or feature, in this environment.
    Authorize,
    /// A feature's version chosen and rendered into the request.
    Feature,
    /// An `idempotency-key`: an earlier answer replayed, a duplicate waiting for the
    /// first, or this call leading.
    Idempotency,
    /// Reasoning state llmop kept for this conversation put back.
    Restore,
    /// `model` resolved, once, to an ordered list of targets.
    Route,
    /// Agent safety on the way in: the end user's scopes (a bad token refused), tools
    /// the user lacks a scope for taken out, the session's taint read, an approved
    /// held call served.
    AgentIn,
    /// Caps, session budgets, rate limits, budget reservations.
    Check,
    /// Input guardrails: the request's text, tool arguments and tool results checked,
    /// masked or refused before any provider sees them.
    GuardIn,
    /// The response cache: a kept answer served, or the answer kept when it comes.
    Cache,
    /// The targets, with retries, fallbacks and breakers.
    Call,
    /// Output guardrails on a whole answer (a stream's are in its relay).
    GuardOut,
    /// Agent safety on the way out: each proposed tool call allowed, denied or held for
    /// approval (a stream's in its relay); the session's taint grows.
    AgentOut,
    /// A feature's output parser and its failure policy.
    ParseOutput,
    /// The answer encoded in the entry point's format.
    Respond,
    /// The record handed to the writer.
    Record,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 18] = [
        Stage::Authenticate,
        Stage::Context,
        Stage::Parse,
        Stage::Authorize,
        Stage::Feature,
        Stage::Idempotency,
        Stage::Restore,
        Stage::Route,
        Stage::AgentIn,
        Stage::Check,
        Stage::GuardIn,
        Stage::Cache,
        Stage::Call,
        Stage::GuardOut,
        Stage::AgentOut,
        Stage::ParseOutput,
        Stage::Respond,
        Stage::Record,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Authenticate => "authenticate",
            Stage::Context => "context",
            Stage::Parse => "parse",
            Stage::Authorize => "authorize",
            Stage::Feature => "feature",
            Stage::Idempotency => "idempotency",
            Stage::Restore => "restore",
            Stage::Route => "route",
            Stage::AgentIn => "agent_in",
            Stage::Check => "check",
            Stage::GuardIn => "guard_in",
            Stage::Cache => "cache",
            Stage::Call => "call",
            Stage::GuardOut => "guard_out",
            Stage::AgentOut => "agent_out",
            Stage::ParseOutput => "parse_output",
            Stage::Respond => "respond",
            Stage::Record => "record",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_discriminant_order() {
        for (i, s) in Stage::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "{}", s.name());
        }
    }
}
