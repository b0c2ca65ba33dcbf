//! CSV files with a fixed header: each file's line is a serde row, written
//! by the `csv` crate (so a value with a comma or a quote comes out quoted).

use serde::{Serialize, Serializer};

/// A line of one of the CSV files. Its header is a contract (scripts and
/// spreadsheets read the columns by name and position), so it is spelled
/// out, and written even when there are no rows; the row's fields are the
/// columns in the same order.
pub trait CsvRow: Serialize {
    const HEADER: &'static [&'static str];
}

/// The header, then one line per row.
pub fn text<R: CsvRow>(rows: impl IntoIterator<Item = R>) -> anyhow::Result<String> {
    // The header comes from HEADER, not from the field names, so that it is
    // there for no rows too; a row with another number of fields is an error.
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    writer.write_record(R::HEADER)?;
    for row in rows {
        writer.serialize(row)?;
    }
    let bytes = writer.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8(bytes)?)
}

/// A number with three decimals, or an empty cell when there is none
/// (`serialize_with` for `f64` and `Option<f64>` fields).
pub fn three_decimals<T, S>(value: &T, serializer: S) -> Result<S::Ok, S::Error>
where
    T: Copy + Into<Option<f64>>,
    S: Serializer,
{
    match (*value).into() {
        Some(v) => serializer.collect_str(&format_args!("{v:.3}")),
        None => serializer.serialize_none(),
    }
}

/// The header serde would write for `row`, to check it against `HEADER`.
#[cfg(test)]
pub fn serde_header<R: Serialize>(row: &R) -> Vec<String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.serialize(row).unwrap();
    let bytes = writer.into_inner().unwrap();
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    reader.headers().unwrap().iter().map(String::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Row<'a> {
        name: &'a str,
        #[serde(serialize_with = "three_decimals")]
        seconds: f64,
        #[serde(serialize_with = "three_decimals")]
        rate: Option<f64>,
    }

    impl CsvRow for Row<'_> {
        const HEADER: &'static [&'static str] = &["name", "seconds", "rate"];
    }

    fn row(name: &str, rate: Option<f64>) -> Row<'_> {
        Row {
            name,
            seconds: 2.0 / 3.0,
            rate,
        }
    }

    #[test]
    fn numbers_have_three_decimals_and_absent_ones_are_empty() {
        let text = text([row("a", Some(1.0)), row("b", None)]).unwrap();
        assert_eq!(text, "name,seconds,rate\na,0.667,1.000\nb,0.667,\n");
        assert_eq!(serde_header(&row("a", None)), Row::HEADER);
    }

    #[test]
    fn a_value_with_a_comma_or_a_quote_is_quoted() {
        let text = text([row("x,y", None), row("say \"hi\"", None)]).unwrap();
        assert_eq!(
            text,
            "name,seconds,rate\n\"x,y\",0.667,\n\"say \"\"hi\"\"\",0.667,\n"
        );
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let names: Vec<String> = reader
            .records()
            .map(|r| r.unwrap()[0].to_string())
            .collect();
        assert_eq!(names, ["x,y", "say \"hi\""]);
    }

    #[test]
    fn no_rows_still_give_the_header() {
        assert_eq!(text(Vec::<Row>::new()).unwrap(), "name,seconds,rate\n");
    }

    #[test]
    fn a_header_of_another_length_is_an_error() {
        #[derive(Serialize)]
        struct Short(u32);
        impl CsvRow for Short {
            const HEADER: &'static [&'static str] = &["a", "b"];
        }
        assert!(text([Short(1)]).is_err());
    }
}
