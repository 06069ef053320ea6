//! Cells of the CSV files the product writes (RFC 4180), safe to open in a
//! spreadsheet: log text is written by mail clients and remote servers, so
//! a sender, a subject or a reason may start like a formula.

/// `text` as one CSV cell. Text that a spreadsheet would read as a formula
/// (starting with `=`, `+`, `-`, `@`, a tab or a carriage return) gets a
/// leading `'` when `is_text` is true; numbers (`-5`) stay as they are. The
/// cell is quoted when it holds a comma, a quote or a line break.
pub fn cell(text: &str, is_text: bool) -> String {
    let defuse = is_text && text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = text.contains([',', '"', '\n', '\r']);
    let mut out = String::with_capacity(text.len() + 3);
    if quote {
        out.push('"');
    }
    if defuse {
        out.push('\'');
    }
    if quote {
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn cells_are_quoted_when_needed() {
        assert_eq!(cell("plain", true), "plain");
        assert_eq!(cell("a,b", true), "\"a,b\"");
        assert_eq!(cell("say \"hi\"", true), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("two\nlines", true), "\"two\nlines\"");
    }

    #[test]
    fn text_that_reads_as_a_formula_is_defused() {
        assert_eq!(cell("=2+3", true), "'=2+3");
        assert_eq!(cell("@SUM(A1)", true), "'@SUM(A1)");
        assert_eq!(cell("\tx", true), "'\tx");
        assert_eq!(
            cell("=HYPERLINK(\"http://x.invalid\")@evil.test", true),
            "\"'=HYPERLINK(\"\"http://x.invalid\"\")@evil.test\""
        );
        assert_eq!(cell("-5", false), "-5");
        assert_eq!(cell("a=b", true), "a=b");
    }
}
