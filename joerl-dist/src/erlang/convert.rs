//! Messages of registered Rust types as terms, for Erlang nodes.

use joerl_core::Message;

use super::serde_term::PidNames;
use super::term::Term;

/// The term for a message that is not a [`Term`] itself: a type registered
/// with `remote_message!` (or `remote_server!`), through serde (see
/// [`super::serde_term`]). Anything else cannot cross to Erlang, and the
/// error says so.
pub(crate) fn to_term(msg: Message, names: &dyn PidNames) -> Result<Term, String> {
    let id = (*msg).type_id();
    let Some((entry, _)) = crate::registry::tables().by_type(id) else {
        return Err("its type is neither joerl_dist::erlang::Term nor registered with remote_message! (register it, or build a Term)".into());
    };
    (entry.to_term)(&*msg, names).map_err(|e| format!("{} as a term: {e}", (entry.type_name)()))
}
