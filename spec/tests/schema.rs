//! `tool-spec.schema.json` must describe exactly what the serde model accepts:
//! the same properties at every level, the same required fields, and unknown
//! fields refused by both.

use std::collections::BTreeSet;

use bmm_spec::model::{Annotations, Credential, Handler, ToolSpec};
use bmm_spec::testing::{echo_spec, http_spec};
use serde_json::{Value, json};

fn schema() -> Value {
    serde_json::from_str(include_str!("../tool-spec.schema.json")).unwrap()
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&schema()).unwrap()
}

/// Every optional field set, so serialisation shows every property.
fn maximal() -> ToolSpec {
    let mut spec = http_spec();
    let mut code = echo_spec().tools[0].clone();
    code.annotations = Annotations {
        read_only_hint: Some(true),
        destructive_hint: Some(false),
        idempotent_hint: Some(true),
        open_world_hint: Some(false),
    };
    code.scopes = vec!["x".into()];
    spec.tools.push(code);
    if let Handler::Http(call) = &mut spec.tools[1].handler {
        call.query.insert("q".into(), "{title}".into());
    }
    spec.tools[0].title = Some("Forecast".into());
    spec.tools[0].scopes = vec!["forecast:read".into()];
    if let Handler::Http(call) = &mut spec.tools[0].handler {
        call.body_args = vec!["city".into()];
    }
    spec.credentials.push(Credential {
        key: "B".into(),
        label: "b".into(),
        description: Some("d".into()),
        used_in: Some("u".into()),
        required: false,
    });
    spec
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn schema_props(s: &Value) -> BTreeSet<String> {
    keys(&s["properties"])
}

fn schema_required(s: &Value) -> BTreeSet<String> {
    s["required"].as_array().map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

#[test]
fn the_schema_is_a_valid_2020_12_schema() {
    jsonschema::meta::validate(&schema()).unwrap();
}

#[test]
fn serialised_specs_are_valid_against_the_schema() {
    let v = validator();
    for spec in [echo_spec(), http_spec(), maximal()] {
        let json = serde_json::to_value(&spec).unwrap();
        let errors: Vec<String> = v.iter_errors(&json).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{json:#}");
    }
}

#[test]
fn properties_agree_with_the_model_at_every_level() {
    let s = schema();
    let defs = &s["$defs"];
    let json = serde_json::to_value(maximal()).unwrap();
    assert_eq!(keys(&json), schema_props(&s), "ToolSpec");
    let http_tool = &json["tools"][0];
    assert_eq!(keys(http_tool), schema_props(&defs["tool"]), "Tool");
    let code_tool = json["tools"].as_array().unwrap().last().unwrap();
    assert_eq!(keys(&code_tool["annotations"]), schema_props(&defs["annotations"]), "Annotations");
    assert_eq!(keys(&code_tool["handler"]), schema_props(&defs["handler"]["oneOf"][0]), "Handler::Code");
    let mut http_keys = keys(&http_tool["handler"]);
    http_keys.extend(keys(&json["tools"][1]["handler"]));
    assert_eq!(http_keys, schema_props(&defs["handler"]["oneOf"][1]), "Handler::Http");
    assert_eq!(keys(&json["credentials"][1]), schema_props(&defs["credential"]), "Credential");
}

/// Each `required` list is exactly what serde cannot do without.
#[test]
fn required_fields_agree_with_the_model() {
    let s = schema();
    let defs = &s["$defs"];
    let full = serde_json::to_value(maximal()).unwrap();
    // (path to an object in `full`, the schema describing it)
    let places: Vec<(Vec<Value>, &Value)> = vec![
        (vec![], &s),
        (vec![json!("tools"), json!(0)], &defs["tool"]),
        (vec![json!("tools"), json!(0), json!("handler")], &defs["handler"]["oneOf"][1]),
        (vec![json!("tools"), json!(2), json!("handler")], &defs["handler"]["oneOf"][0]),
        (vec![json!("credentials"), json!(1)], &defs["credential"]),
    ];
    for (path, sub) in places {
        let object_keys = {
            let mut at = &full;
            for p in &path {
                at = if let Some(i) = p.as_u64() { &at[i as usize] } else { &at[p.as_str().unwrap()] };
            }
            keys(at)
        };
        let required = schema_required(sub);
        for key in object_keys {
            let mut doc = full.clone();
            let mut at = &mut doc;
            for p in &path {
                at = if let Some(i) = p.as_u64() { &mut at[i as usize] } else { &mut at[p.as_str().unwrap()] };
            }
            at.as_object_mut().unwrap().remove(&key);
            let serde_ok = serde_json::from_value::<ToolSpec>(doc.clone()).is_ok();
            let schema_ok = validator().is_valid(&doc);
            assert_eq!(serde_ok, !required.contains(&key), "serde and `required` disagree on {path:?}.{key}");
            // `kind` is the handler tag: without it neither accepts the document.
            assert_eq!(schema_ok, serde_ok, "schema and serde disagree without {path:?}.{key}");
        }
    }
}

#[test]
fn unknown_fields_are_refused_by_both() {
    let full = serde_json::to_value(maximal()).unwrap();
    let pointers = ["", "/tools/0", "/tools/0/handler", "/tools/2/handler", "/tools/2/annotations", "/credentials/0"];
    for ptr in pointers {
        let mut doc = full.clone();
        doc.pointer_mut(ptr).unwrap().as_object_mut().unwrap().insert("surprise".into(), json!(1));
        assert!(serde_json::from_value::<ToolSpec>(doc.clone()).is_err(), "serde accepted surprise at {ptr:?}");
        assert!(!validator().is_valid(&doc), "schema accepted surprise at {ptr:?}");
    }
}

#[test]
fn a_wrong_handler_kind_is_refused_by_both() {
    let mut doc = serde_json::to_value(echo_spec()).unwrap();
    doc["tools"][0]["handler"]["kind"] = json!("shell");
    assert!(serde_json::from_value::<ToolSpec>(doc.clone()).is_err());
    assert!(!validator().is_valid(&doc));
}
