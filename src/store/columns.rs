//! How the model's types sit in columns: every text enum is stored as its fixed text and
//! decoded back into the enum on both backends (a row whose text is not one of the enum's
//! values is a decode error, never a string the code compares), and [`Bind`] names the
//! values a backend-generic statement binds.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};

use crate::model::call::{CallKind, CallResult, Refusal};
use crate::model::goal::{Outcome, RunStatus};
use crate::model::persona::{DetailLevel, Flow, HeadlineType, UserKind};
use crate::model::profile::{InteractionType, ProfileStatus, Sentiment};
use crate::model::space::SpaceKind;
use crate::model::tick::{RatingStatus, TickStatus, Trigger};

/// A value that `DB` can bind, whatever the statement's lifetime: what the generic binders
/// of this module's neighbours ask for, one bound per bound type.
pub(crate) trait Bind<DB: Database>: for<'e> Encode<'e, DB> + Type<DB> {}
impl<DB: Database, T: for<'e> Encode<'e, DB> + Type<DB>> Bind<DB> for T {}

/// A query on either backend, as the generic binders take and give it.
pub(crate) type Query<'q, DB> = sqlx::query::Query<'q, DB, <DB as Database>::Arguments>;

/// Implements the column traits of text enums: the text of `as_str` in, `FromStr` out.
macro_rules! text_columns {
    ($($kind:ty),+ $(,)?) => {$(
        impl<DB: Database> Type<DB> for $kind
        where
            str: Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: Database> Encode<'q, DB> for $kind
        where
            &'static str: Encode<'q, DB>,
        {
            fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
                self.as_str().encode_by_ref(buf)
            }
        }

        impl<'r, DB: Database> Decode<'r, DB> for $kind
        where
            &'r str: Decode<'r, DB>,
        {
            fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
                Ok(<&str as Decode<DB>>::decode(value)?.parse::<$kind>()?)
            }
        }
    )+};
}

text_columns!(
    Outcome,
    SpaceKind,
    RunStatus,
    CallKind,
    CallResult,
    Refusal,
    TickStatus,
    Trigger,
    RatingStatus,
    UserKind,
    Flow,
    DetailLevel,
    HeadlineType,
    InteractionType,
    Sentiment,
    ProfileStatus,
);
