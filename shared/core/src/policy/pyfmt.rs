//! Python `repr` of the few values that appear inside reason strings (`['lint']`, `65.0`).
//! Reasons are compared verbatim by consumers of the reference's events, so they keep its
//! spelling.

/// `repr(s)` of a Python `str`: single quotes unless the text holds a single quote and no
/// double quote; backslashes, the chosen quote and control characters escaped.
pub fn py_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// `repr(list_of_str)`: `['a', 'b']`.
pub fn py_list_repr<S: AsRef<str>>(items: &[S]) -> String {
    let inner: Vec<String> = items.iter().map(|s| py_str_repr(s.as_ref())).collect();
    format!("[{}]", inner.join(", "))
}

/// `repr(float)` for the magnitudes that occur in scores: `65.0`, `27.4`.
pub fn py_float_repr(x: f64) -> String {
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reprs_match_python() {
        assert_eq!(
            py_list_repr(&["lint", "unit_tests"]),
            "['lint', 'unit_tests']"
        );
        assert_eq!(py_list_repr::<&str>(&[]), "[]");
        assert_eq!(py_str_repr("it's"), "\"it's\"");
        assert_eq!(py_str_repr("a'b\"c"), "'a\\'b\"c'");
        assert_eq!(py_float_repr(65.0), "65.0");
        assert_eq!(py_float_repr(27.4), "27.4");
    }
}
