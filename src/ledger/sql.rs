//! The ledger's column types: sequence numbers, transaction ids (the domain's `TxId`, whose
//! conversions live here, at the SQL edge) and times as SQLite integers (PostgreSQL `bigint`s),
//! converted with checks instead of `as` casts. Each type converts the same way to and from both
//! back ends, so a record reads back as itself from either.

use bytes::BytesMut;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::Serialize;
use tokio_postgres::types::{self as pg, IsNull, Type, to_sql_checked};

use crate::domain::{Action, TxId};

/// A value that does not fit the column it is written to or read from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value} is out of range: a ledger holds 1 to {max}", max = i64::MAX)]
pub(crate) struct RangeError {
    /// The kind of value (`sequence number`).
    pub(crate) what: &'static str,
    /// The value as written or found.
    pub(crate) value: i128,
}

/// A position in the chain: 1 for the first record. SQLite stores it as a signed integer, so
/// values above `i64::MAX` and below 1 are refused both ways.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub(crate) struct Seq(pub(crate) u64);

impl Seq {
    /// The record after this one.
    pub(crate) fn next(self) -> Result<Self, RangeError> {
        let next = Self(self.0.saturating_add(1));
        next.checked().map(|_| next)
    }

    fn checked(self) -> Result<i64, RangeError> {
        i64::try_from(self.0)
            .ok()
            .filter(|v| *v >= 1)
            .ok_or(RangeError {
                what: "sequence number",
                value: i128::from(self.0),
            })
    }

    /// The value as a query bound: every stored sequence number lies in `0..=i64::MAX`, so a
    /// larger bound means the same as `i64::MAX`.
    pub(crate) fn bound(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

impl ToSql for Seq {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let v = self
            .checked()
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(ToSqlOutput::from(v))
    }
}

impl FromSql for Seq {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let v = i64::column_result(value)?;
        let seq = u64::try_from(v).map(Self).map_err(|_| RangeError {
            what: "sequence number",
            value: i128::from(v),
        });
        seq.and_then(|s| s.checked().map(|_| s))
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

/// The stored form of a 1BitPay transaction id. Ids are unsigned 64-bit; SQLite integers are
/// signed, so an id is stored as the `i64` with the same 64 bits (ids from 2^63 up read as
/// negative in the file). Every id has exactly one stored form, the form ledgers have always
/// had; it is hashed as the id's number (`TxId`'s `Serialize`), never as the stored form.
pub(crate) fn stored(id: TxId) -> i64 {
    i64::from_ne_bytes(id.get().to_ne_bytes())
}

/// The id whose stored form is `v` (see [`stored`]).
fn from_stored(v: i64) -> TxId {
    TxId::new(u64::from_ne_bytes(v.to_ne_bytes()))
}

impl ToSql for TxId {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(stored(*self)))
    }
}

impl FromSql for TxId {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        i64::column_result(value).map(from_stored)
    }
}

/// Milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub(crate) struct Millis(pub(crate) i64);

impl ToSql for Millis {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.0))
    }
}

impl FromSql for Millis {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        i64::column_result(value).map(Self)
    }
}

/// What became of a sent decision, as an outcome records it. The default is only ever the
/// blank a record is read into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Sent {
    /// The server accepted it.
    Submitted,
    /// The server refused it or could not be reached.
    #[default]
    Failed,
}

impl Sent {
    /// The text stored and hashed.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Sent::Submitted => "submitted",
            Sent::Failed => "failed",
        }
    }
}

impl ToSql for Sent {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

/// A stored outcome status that is neither `submitted` nor `failed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an outcome: submitted or failed")]
pub(crate) struct UnknownOutcome(String);

impl Sent {
    fn parse(text: &str) -> Result<Self, UnknownOutcome> {
        match text {
            "submitted" => Ok(Sent::Submitted),
            "failed" => Ok(Sent::Failed),
            other => Err(UnknownOutcome(other.to_owned())),
        }
    }
}

impl FromSql for Sent {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        Sent::parse(value.as_str()?).map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

/// The error a PostgreSQL conversion reports.
type PgResult<T> = Result<T, Box<dyn std::error::Error + Sync + Send>>;

/// PostgreSQL conversions for a column type stored as a `bigint` (through `$to`) or as text
/// (through `&str`), with the same checks as the SQLite ones.
macro_rules! pg_column {
    ($t:ty, bigint, $to:expr, $from:expr) => {
        impl pg::ToSql for $t {
            fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> PgResult<IsNull> {
                let v: i64 = $to(self)?;
                pg::ToSql::to_sql(&v, ty, out)
            }
            fn accepts(ty: &Type) -> bool {
                <i64 as pg::ToSql>::accepts(ty)
            }
            to_sql_checked!();
        }
        impl<'a> pg::FromSql<'a> for $t {
            fn from_sql(ty: &Type, raw: &'a [u8]) -> PgResult<Self> {
                $from(<i64 as pg::FromSql>::from_sql(ty, raw)?)
            }
            fn accepts(ty: &Type) -> bool {
                <i64 as pg::FromSql>::accepts(ty)
            }
        }
    };
    ($t:ty, text, $from:expr) => {
        impl pg::ToSql for $t {
            fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> PgResult<IsNull> {
                pg::ToSql::to_sql(&self.as_str(), ty, out)
            }
            fn accepts(ty: &Type) -> bool {
                <&str as pg::ToSql>::accepts(ty)
            }
            to_sql_checked!();
        }
        impl<'a> pg::FromSql<'a> for $t {
            fn from_sql(ty: &Type, raw: &'a [u8]) -> PgResult<Self> {
                $from(<&str as pg::FromSql>::from_sql(ty, raw)?)
            }
            fn accepts(ty: &Type) -> bool {
                <&str as pg::FromSql>::accepts(ty)
            }
        }
    };
}

pg_column!(
    Seq,
    bigint,
    |s: &Seq| s.checked(),
    |v: i64| -> PgResult<Seq> {
        let seq = u64::try_from(v).map(Seq).map_err(|_| RangeError {
            what: "sequence number",
            value: i128::from(v),
        })?;
        seq.checked()?;
        Ok(seq)
    }
);
pg_column!(
    TxId,
    bigint,
    |t: &TxId| -> PgResult<i64> { Ok(stored(*t)) },
    |v: i64| -> PgResult<TxId> { Ok(from_stored(v)) }
);
pg_column!(
    Millis,
    bigint,
    |m: &Millis| -> PgResult<i64> { Ok(m.0) },
    |v: i64| -> PgResult<Millis> { Ok(Millis(v)) }
);
pg_column!(Sent, text, |v: &str| -> PgResult<Sent> {
    Ok(Sent::parse(v)?)
});
pg_column!(Action, text, |v: &str| -> PgResult<Action> {
    Ok(v.parse::<Action>()?)
});

/// A count or length as a SQL integer; anything beyond `i64::MAX` means "no limit".
pub(crate) fn sql_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl ToSql for Action {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Action {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn round_trip<T: ToSql + FromSql>(v: T) -> rusqlite::Result<T> {
        let conn = Connection::open_in_memory()?;
        conn.query_row("SELECT ?1", [&v], |r| r.get(0))
    }

    fn read<T: FromSql>(stored: i64) -> rusqlite::Result<T> {
        let conn = Connection::open_in_memory()?;
        conn.query_row("SELECT ?1", [stored], |r| r.get(0))
    }

    #[test]
    fn a_sequence_number_beyond_what_sqlite_holds_is_refused_rather_than_wrapped() {
        assert_eq!(round_trip(Seq(1)).unwrap(), Seq(1));
        assert_eq!(
            round_trip(Seq(i64::MAX.unsigned_abs())).unwrap(),
            Seq(i64::MAX.unsigned_abs())
        );
        let err = round_trip(Seq(1 << 63)).unwrap_err().to_string();
        assert!(
            err.contains("sequence number 9223372036854775808 is out of range"),
            "{err}"
        );
        assert!(round_trip(Seq(0)).is_err());
        assert!(
            read::<Seq>(-1)
                .unwrap_err()
                .to_string()
                .contains("out of range")
        );
        assert!(Seq(i64::MAX.unsigned_abs()).next().is_err());
        assert_eq!(Seq(0).next(), Ok(Seq(1)));
    }

    #[test]
    fn every_transaction_id_has_one_stored_form_and_reads_back_as_itself() {
        for id in [0, 1, 7, i64::MAX.unsigned_abs(), 1 << 63, u64::MAX] {
            let id = TxId::new(id);
            assert_eq!(round_trip(id).unwrap(), id);
            assert_eq!(from_stored(stored(id)), id);
        }
        // The form ledgers written before these types hold.
        assert_eq!(read::<TxId>(-1).unwrap(), TxId::new(u64::MAX));
        assert_eq!(read::<TxId>(i64::MIN).unwrap(), TxId::new(1 << 63));
        assert_eq!(read::<TxId>(7).unwrap(), TxId::new(7));
        assert_eq!(stored(TxId::new(u64::MAX)), -1);
        assert_eq!(stored(TxId::new(1 << 63)), i64::MIN);
        assert_eq!(stored(TxId::new(i64::MAX.unsigned_abs())), i64::MAX);
        // What SQLite holds is the signed form, as an integer.
        let conn = Connection::open_in_memory().unwrap();
        let (value, kind): (i64, String) = conn
            .query_row("SELECT ?1, typeof(?1)", [TxId::new(u64::MAX)], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((value, kind.as_str()), (-1, "integer"));
    }

    #[test]
    fn an_outcome_status_reads_back_and_an_unknown_one_is_an_error() {
        for s in [Sent::Submitted, Sent::Failed] {
            assert_eq!(round_trip(s).unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        let conn = Connection::open_in_memory().unwrap();
        let err = conn
            .query_row("SELECT 'Submitted'", [], |r| r.get::<_, Sent>(0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"Submitted\" is not an outcome"), "{err}");
    }

    #[test]
    fn an_unknown_action_in_the_file_is_an_error_that_names_it() {
        assert_eq!(round_trip(Action::Approve).unwrap(), Action::Approve);
        let conn = Connection::open_in_memory().unwrap();
        let err = conn
            .query_row("SELECT 'approvee'", [], |r| r.get::<_, Action>(0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"approvee\" is not an action"), "{err}");
    }
}
