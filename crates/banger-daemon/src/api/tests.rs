//! The OpenAPI document against the router: every route served is documented with the answers
//! it can give, and the whole document is a snapshot so a change to the API's shape is reviewed.

use utoipa::OpenApi;

/// Every `(method, path)` the router serves, read from [`super::router`]'s source: each
/// `.route("PATH", ...)` and the method functions (`get(`, `post(`, ...) in its arguments.
fn served_routes() -> Vec<(String, String)> {
    let source = include_str!("../api.rs");
    let start = source.find("pub fn router(").expect("the router");
    let end = start
        + source[start..]
            .find(".fallback(")
            .expect("the router's end");
    let mut routes = Vec::new();
    let mut rest = &source[start..end];
    while let Some(at) = rest.find(".route(") {
        rest = rest[at + ".route(".len()..].trim_start();
        rest = rest.strip_prefix('"').expect("a route's path is a literal");
        let path_end = rest.find('"').unwrap();
        let path = rest[..path_end].to_owned();
        // The arguments: up to the parenthesis that closes `.route(`.
        let mut depth = 1;
        let mut args_end = 0;
        for (i, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        args_end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let args = &rest[path_end..args_end];
        for method in ["get", "post", "put", "patch", "delete"] {
            let called = args
                .match_indices(&format!("{method}("))
                .any(|(i, _)| !args[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_'));
            if called {
                routes.push((method.to_owned(), path.clone()));
            }
        }
        rest = &rest[args_end..];
    }
    routes
}

#[test]
fn every_route_served_is_in_the_openapi_document() {
    let doc = serde_json::to_value(super::ApiDoc::openapi()).unwrap();
    let routes = served_routes();
    assert!(routes.len() > 40, "the router was read: {routes:?}");
    // A literal path the router serves for a name (an image called "import") is covered by
    // the templated path it stands for.
    let covers = |documented: &str, served: &str| {
        let (d, s): (Vec<&str>, Vec<&str>) =
            (documented.split('/').collect(), served.split('/').collect());
        d.len() == s.len()
            && d.iter()
                .zip(&s)
                .all(|(d, s)| d == s || (d.starts_with('{') && !s.starts_with('{')))
    };
    let paths = doc["paths"].as_object().unwrap();
    let missing: Vec<String> = routes
        .iter()
        .filter(|(_, path)| path != "/v1/openapi.json")
        .filter(|(method, path)| {
            !paths
                .iter()
                .any(|(documented, item)| covers(documented, path) && item.get(method).is_some())
        })
        .map(|(method, path)| format!("{} {path}", method.to_uppercase()))
        .collect();
    assert!(missing.is_empty(), "served but not documented: {missing:?}");
}

#[test]
fn answers_every_route_can_give_are_documented() {
    let doc = serde_json::to_value(super::ApiDoc::openapi()).unwrap();
    let create = &doc["paths"]["/v1/vms"]["post"]["responses"];
    for status in ["400", "413", "415", "500", "507"] {
        assert!(create.get(status).is_some(), "POST /v1/vms lacks {status}");
    }
    assert!(
        doc["paths"]["/v1/vms"]["get"]["responses"]
            .get("507")
            .is_none()
    );
    let stop = &doc["paths"]["/v1/vms/{name}/stop"]["post"]["responses"];
    assert!(stop.get("400").is_some() && stop.get("415").is_none());
    let stream = &doc["paths"]["/v1/operations/{id}/stream"]["get"]["responses"]["200"];
    assert!(
        stream["content"].get("application/x-ndjson").is_some(),
        "{stream}"
    );
    let exec = &doc["paths"]["/v1/vms/{name}/exec"]["post"];
    assert!(
        exec["requestBody"]["content"]
            .get("application/vnd.banger.exec-frames")
            .is_some()
    );
    let tar = &doc["paths"]["/v1/vms/{name}/files"]["get"]["responses"]["200"]["content"];
    assert_eq!(
        tar["application/x-tar"]["schema"]["$ref"],
        "#/components/schemas/Binary"
    );
    assert_eq!(doc["components"]["schemas"]["Binary"]["format"], "binary");
}

/// The whole OpenAPI document, as clients see it: any change to the API's shape (a field,
/// a type, a route, an answer) shows in review as a change of this snapshot. The version
/// is left out: it changes with every release.
#[test]
fn the_openapi_document() {
    let mut doc = serde_json::to_value(super::ApiDoc::openapi()).unwrap();
    doc["info"]["version"] = serde_json::Value::String("VERSION".into());
    insta::assert_json_snapshot!(doc);
}
