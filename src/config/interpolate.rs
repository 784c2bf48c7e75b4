//! `${VAR}` and `${VAR:-default}` substitution in every string of a parsed TOML document.
//!
//! Pure over an environment map, so tests never touch the process environment, and every missing
//! variable is reported (with the field's path), not just the first.

use std::collections::HashMap;

use super::Problem;

/// Replaces references in all string values of `value`; `$${` writes a literal `${`.
pub(super) fn interpolate(
    value: &mut toml::Value,
    env: &HashMap<String, String>,
    path: &str,
    problems: &mut Vec<Problem>,
) {
    match value {
        toml::Value::String(text) if text.contains('$') => match substitute(text, env) {
            Ok(replaced) => *text = replaced,
            Err(message) => problems.push(Problem::new(path, message)),
        },
        toml::Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                interpolate(item, env, &format!("{path}[{index}]"), problems);
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                interpolate(item, env, &child, problems);
            }
        }
        _ => {}
    }
}

fn substitute(text: &str, env: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        if let Some(after) = rest.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| {
                "unclosed `${`: write `${NAME}` or `$${` for a literal".to_owned()
            })?;
            let reference = &after[..end];
            let (name, default) = match reference.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (reference, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`${{{reference}}}` is not a valid variable reference"));
            }
            match (env.get(name).filter(|v| !v.is_empty()), default) {
                (Some(value), _) => out.push_str(value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set: export it, or write `${{{name}:-default}}`"
                    ));
                }
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        HashMap::from([("KEY_A".to_owned(), "alpha".to_owned())])
    }

    #[test]
    fn substitutes_defaults_and_escapes() {
        let env = env();
        assert_eq!(substitute("${KEY_A}", &env).unwrap(), "alpha");
        assert_eq!(substitute("x-${MISSING:-dflt}-y", &env).unwrap(), "x-dflt-y");
        assert_eq!(substitute("$${KEY_A} costs $5", &env).unwrap(), "${KEY_A} costs $5");
    }

    #[test]
    fn reports_every_missing_variable_with_its_path() {
        let mut doc: toml::Value =
            toml::from_str("a = \"${NOPE}\"\n[t]\nlist = [\"ok\", \"${ALSO_NOPE}\"]").unwrap();
        let mut problems = Vec::new();
        interpolate(&mut doc, &env(), "", &mut problems);
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["a", "t.list[1]"]);
        assert!(problems[0].message.contains("NOPE"));
    }

    #[test]
    fn rejects_malformed_references() {
        assert!(substitute("${unclosed", &env()).is_err());
        assert!(substitute("${BAD-NAME}", &env()).is_err());
    }
}
