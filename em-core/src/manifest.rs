//! Run identity: the field-by-field comparison of two manifests (any serialisable
//! configuration, as JSON), used wherever a run resumes into files an earlier run wrote — the
//! evaluation runner's results today, em-train's checkpoints once it exists — so that a resume
//! with another model, strategy or hyperparameter is refused with the field that differs
//! instead of mixing records.

use serde_json::Value;

/// The first field where two manifests differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Dotted path of the field (`strategy.kl_weight`, `stop_strings.1`); empty for the whole
    /// value.
    pub field: String,
    /// Its value in the existing manifest (`<absent>` when missing), as compact JSON.
    pub existing: String,
    /// Its value in the requested one, likewise.
    pub requested: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` is {} in the existing run, {} in this one",
            self.field, self.existing, self.requested
        )
    }
}

/// The first difference between `existing` and `requested`, walking objects in key order
/// (keys of both), arrays by index; `None` when they are equal. Numbers compare by value
/// (`1` equals `1.0`).
pub fn first_difference(existing: &Value, requested: &Value) -> Option<Difference> {
    walk(String::new(), Some(existing), Some(requested))
}

fn walk(path: String, a: Option<&Value>, b: Option<&Value>) -> Option<Difference> {
    let show = |v: Option<&Value>| v.map_or_else(|| "<absent>".to_string(), Value::to_string);
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .find_map(|k| walk(join(k), x.get(k), y.get(k)))
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            (0..x.len().max(y.len())).find_map(|i| walk(join(&i.to_string()), x.get(i), y.get(i)))
        }
        (Some(Value::Number(x)), Some(Value::Number(y))) if x.as_f64() == y.as_f64() => None,
        (x, y) if x == y => None,
        (x, y) => Some(Difference {
            field: path.clone(),
            existing: show(x),
            requested: show(y),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_manifests_have_no_difference() {
        let a = json!({"model": "m", "strategy": {"kl_weight": 0.05, "steps": 3}, "stops": ["a"]});
        assert_eq!(first_difference(&a, &a.clone()), None);
        assert_eq!(first_difference(&json!({"x": 1}), &json!({"x": 1.0})), None);
    }

    #[test]
    fn the_first_differing_field_is_named_with_both_values() {
        let a = json!({"model": "m", "strategy": {"kl_weight": 0.05, "steps": 3}});
        let b = json!({"model": "m", "strategy": {"kl_weight": 0.01, "steps": 3}});
        let d = first_difference(&a, &b).unwrap_or_else(|| panic!("they differ"));
        assert_eq!(d.field, "strategy.kl_weight");
        assert_eq!(
            (d.existing.as_str(), d.requested.as_str()),
            ("0.05", "0.01")
        );
        assert!(d.to_string().contains("strategy.kl_weight"));
        // Missing keys, array elements and type changes.
        let d = first_difference(&json!({"a": 1}), &json!({"a": 1, "b": 2}));
        assert_eq!(
            d.map(|d| (d.field, d.existing)),
            Some(("b".into(), "<absent>".into()))
        );
        let d = first_difference(&json!({"s": ["x", "y"]}), &json!({"s": ["x", "z"]}));
        assert_eq!(d.map(|d| d.field), Some("s.1".into()));
        let d = first_difference(&json!({"t": 1}), &json!({"t": "1"}));
        assert_eq!(d.map(|d| d.field), Some("t".into()));
        let d = first_difference(&json!(1), &json!(2));
        assert_eq!(d.map(|d| d.field), Some(String::new()));
    }
}
