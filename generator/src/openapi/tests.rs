use super::*;

const PETSTORE: &str = include_str!("../../fixtures/petstore.yaml");
const PETSTORE_EXPANDED: &str = include_str!("../../fixtures/petstore-expanded.yaml");
const PETSTORE3: &str = include_str!("../../fixtures/petstore3.json");
const GITHUB: &str = include_str!("../../fixtures/github-issues.yaml");
const TRAIN_TRAVEL: &str = include_str!("../../fixtures/train-travel.yaml");

const NO_SECURITY: &str = "the document declares no security schemes, so the tools send no credentials; \
     calls the API only allows when authenticated will be refused";

/// One line per tool: name, method, URL, required arguments, hints.
fn summary(spec: &ToolSpec) -> Vec<String> {
    spec.tools
        .iter()
        .map(|t| {
            let Handler::Http(h) = &t.handler else { panic!("{} is not an http tool", t.name) };
            let required: Vec<&str> = t.input_schema["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut hints = Vec::new();
            if t.annotations.read_only_hint == Some(true) {
                hints.push("readOnly");
            }
            if t.annotations.destructive_hint == Some(true) {
                hints.push("destructive");
            }
            format!("{} {} {} required={required:?} {}", t.name, h.method, h.url, hints.join(",")).trim_end().to_owned()
        })
        .collect()
}

fn http(spec: &ToolSpec, tool: &str) -> HttpCall {
    match &spec.tool(tool).unwrap_or_else(|| panic!("no tool {tool}")).handler {
        Handler::Http(h) => h.clone(),
        other => panic!("{other:?}"),
    }
}

fn import_ok(doc: &str) -> Imported {
    let imported = import(doc, "").unwrap_or_else(|e| panic!("import failed: {e}"));
    let errors = crate::check::validate_spec(&imported.spec);
    assert!(errors.is_empty(), "invalid spec: {errors:?}");
    imported
}

fn import_err(doc: &str) -> String {
    let e = import(doc, "").expect_err("import should fail");
    assert_eq!(e.field(), Some("openapi"), "{e}");
    e.to_string()
}

#[test]
fn petstore() {
    let imp = import_ok(PETSTORE);
    let spec = &imp.spec;
    assert_eq!(spec.name, "Swagger Petstore");
    assert_eq!(
        summary(spec),
        [
            "list_pets GET https://petstore.swagger.io/v1/pets required=[] readOnly",
            "create_pets POST https://petstore.swagger.io/v1/pets required=[\"id\", \"name\"]",
            "show_pet_by_id GET https://petstore.swagger.io/v1/pets/{petId} required=[\"petId\"] readOnly",
        ]
    );
    assert_eq!(spec.allowed_hosts, ["petstore.swagger.io"]);
    assert!(spec.credentials.is_empty());
    assert_eq!(http(spec, "list_pets").query, BTreeMap::from([("limit".to_owned(), "{limit}".to_owned())]));
    assert_eq!(http(spec, "create_pets").body_args, ["id", "name", "tag"]);
    assert_eq!(
        spec.tool("list_pets").unwrap().input_schema["properties"]["limit"],
        json!({"type": "integer", "maximum": 100, "format": "int32", "description": "How many items to return at one time (max 100)"})
    );
    assert_eq!(
        imp.warnings,
        [
            "servers[0].url \"http://petstore.swagger.io/v1\" uses plain http; the tools call https://petstore.swagger.io instead",
            NO_SECURITY,
        ]
    );
    insta::assert_json_snapshot!("petstore", spec);
}

#[test]
fn petstore_expanded() {
    let imp = import_ok(PETSTORE_EXPANDED);
    let spec = &imp.spec;
    assert_eq!(
        summary(spec),
        [
            "find_pets GET https://petstore.swagger.io/v2/pets required=[] readOnly",
            "add_pet POST https://petstore.swagger.io/v2/pets required=[\"name\"]",
            "find_pet_by_id GET https://petstore.swagger.io/v2/pets/{id} required=[\"id\"] readOnly",
            "delete_pet DELETE https://petstore.swagger.io/v2/pets/{id} required=[\"id\"] readOnly,destructive"
                .replace("readOnly,", "")
                .as_str(),
        ]
    );
    let find = spec.tool("find_pets").unwrap();
    assert!(find.description.starts_with("Returns all pets from the system"));
    assert!(find.description.len() <= MAX_TOOL_DESCRIPTION);
    assert_eq!(find.input_schema["properties"]["tags"]["type"], "array");
    let delete = spec.tool("delete_pet").unwrap();
    assert_eq!(delete.annotations.read_only_hint, Some(false));
    assert_eq!(delete.annotations.idempotent_hint, Some(true));
    assert_eq!(imp.warnings, [NO_SECURITY]);
    insta::assert_json_snapshot!("petstore_expanded", spec);
}

#[test]
fn petstore3_with_relative_server_is_refused() {
    let e = import_err(PETSTORE3);
    assert!(e.contains("\"/api/v3\" is relative"), "{e}");
    assert!(e.contains("https://api.example.com/api/v3"), "{e}");
}

#[test]
fn petstore3() {
    let doc = PETSTORE3.replace("\"url\": \"/api/v3\"", "\"url\": \"https://petstore3.swagger.io/api/v3\"");
    let imp = import_ok(&doc);
    let spec = &imp.spec;
    assert_eq!(spec.name, "Swagger Petstore - OpenAPI 3.0");
    assert_eq!(
        summary(spec),
        [
            "add_pet POST https://petstore3.swagger.io/api/v3/pet required=[\"name\", \"photoUrls\"]",
            "update_pet PUT https://petstore3.swagger.io/api/v3/pet required=[\"name\", \"photoUrls\"]",
            "find_pets_by_status GET https://petstore3.swagger.io/api/v3/pet/findByStatus required=[] readOnly",
            "find_pets_by_tags GET https://petstore3.swagger.io/api/v3/pet/findByTags required=[] readOnly",
            "get_pet_by_id GET https://petstore3.swagger.io/api/v3/pet/{petId} required=[\"petId\"] readOnly",
            "update_pet_with_form POST https://petstore3.swagger.io/api/v3/pet/{petId} required=[\"petId\"]",
            "delete_pet DELETE https://petstore3.swagger.io/api/v3/pet/{petId} required=[\"petId\"] destructive",
            "get_inventory GET https://petstore3.swagger.io/api/v3/store/inventory required=[] readOnly",
            "place_order POST https://petstore3.swagger.io/api/v3/store/order required=[]",
            "get_order_by_id GET https://petstore3.swagger.io/api/v3/store/order/{orderId} required=[\"orderId\"] readOnly",
            "delete_order DELETE https://petstore3.swagger.io/api/v3/store/order/{orderId} required=[\"orderId\"] destructive",
            "create_user POST https://petstore3.swagger.io/api/v3/user required=[]",
            "login_user GET https://petstore3.swagger.io/api/v3/user/login required=[] readOnly",
            "logout_user GET https://petstore3.swagger.io/api/v3/user/logout required=[] readOnly",
            "get_user_by_name GET https://petstore3.swagger.io/api/v3/user/{username} required=[\"username\"] readOnly",
            "update_user PUT https://petstore3.swagger.io/api/v3/user/{username} required=[\"username\"]",
            "delete_user DELETE https://petstore3.swagger.io/api/v3/user/{username} required=[\"username\"] destructive",
        ]
    );
    assert_eq!(
        imp.warnings,
        [
            "POST /pet/{petId}/uploadImage: the request body is application/octet-stream, but tools can only send JSON; skipped",
            "POST /user/createWithList: the request body is a JSON array, but tools can only send JSON objects; skipped",
            "PUT /user/{username}: body field \"username\" clashes with a parameter; left out",
        ]
    );
    // Credentials: the API key header and the OAuth token, each where the document puts it.
    let keys: Vec<(&str, bool)> = spec.credentials.iter().map(|c| (c.key.as_str(), c.required)).collect();
    assert_eq!(keys, [("API_KEY", true), ("PETSTORE_AUTH", true)]);
    assert_eq!(
        http(spec, "get_pet_by_id").headers,
        BTreeMap::from([("api_key".to_owned(), "{{credentials.API_KEY}}".to_owned())])
    );
    let delete = http(spec, "delete_pet");
    assert_eq!(
        delete.headers,
        BTreeMap::from([
            ("Authorization".to_owned(), "Bearer {{credentials.PETSTORE_AUTH}}".to_owned()),
            ("api_key".to_owned(), "{api_key}".to_owned()),
        ])
    );
    assert!(http(spec, "place_order").headers.is_empty());
    // Nested $refs are inlined; the body's object arguments keep their shape.
    let add = spec.tool("add_pet").unwrap();
    assert_eq!(add.input_schema["properties"]["category"]["properties"]["name"], json!({"type": "string"}));
    assert_eq!(add.input_schema["properties"]["tags"]["items"]["properties"]["id"]["format"], "int64");
    assert_eq!(add.input_schema["additionalProperties"], false);
    insta::assert_json_snapshot!("petstore3", spec);
}

#[test]
fn github() {
    let imp = import_ok(GITHUB);
    let spec = &imp.spec;
    assert_eq!(
        summary(spec),
        [
            "repos_get GET https://api.github.com/repos/{owner}/{repo} required=[\"owner\", \"repo\"] readOnly",
            "repos_update PATCH https://api.github.com/repos/{owner}/{repo} required=[\"owner\", \"repo\"]",
            "repos_delete DELETE https://api.github.com/repos/{owner}/{repo} required=[\"owner\", \"repo\"] destructive",
            "issues_list_for_repo GET https://api.github.com/repos/{owner}/{repo}/issues required=[\"owner\", \"repo\"] readOnly",
            "issues_create POST https://api.github.com/repos/{owner}/{repo}/issues required=[\"owner\", \"repo\", \"title\"]",
            "issues_get GET https://api.github.com/repos/{owner}/{repo}/issues/{issue_number} required=[\"owner\", \"repo\", \"issue_number\"] readOnly",
            "issues_update PATCH https://api.github.com/repos/{owner}/{repo}/issues/{issue_number} required=[\"owner\", \"repo\", \"issue_number\"]",
            "issues_list_comments GET https://api.github.com/repos/{owner}/{repo}/issues/{issue_number}/comments required=[\"owner\", \"repo\", \"issue_number\"] readOnly",
            "issues_create_comment POST https://api.github.com/repos/{owner}/{repo}/issues/{issue_number}/comments required=[\"owner\", \"repo\", \"issue_number\", \"body\"]",
            "issues_lock PUT https://api.github.com/repos/{owner}/{repo}/issues/{issue_number}/lock required=[\"owner\", \"repo\", \"issue_number\"]",
            "issues_unlock DELETE https://api.github.com/repos/{owner}/{repo}/issues/{issue_number}/lock required=[\"owner\", \"repo\", \"issue_number\"] destructive",
            "search_issues_and_pull_requests GET https://api.github.com/search/issues required=[\"q\"] readOnly",
            "repos_list_for_authenticated_user GET https://api.github.com/user/repos required=[] readOnly",
        ]
    );
    assert_eq!(spec.allowed_hosts, ["api.github.com"]);
    assert!(spec.credentials.is_empty(), "the GitHub description declares no security schemes");
    assert_eq!(imp.warnings, [NO_SECURITY]);
    assert_eq!(
        spec.tool("issues_create").unwrap().input_schema["properties"]["milestone"]["oneOf"][2],
        json!({"type": "null"})
    );
    assert_eq!(spec.description, "GitHub's v3 REST API.");
    let list = http(spec, "issues_list_for_repo");
    assert_eq!(list.query.len(), 11);
    assert_eq!(list.query["per_page"], "{per_page}");
    let create = spec.tool("issues_create").unwrap();
    assert_eq!(
        http(spec, "issues_create").body_args,
        ["assignee", "assignees", "body", "labels", "milestone", "title"]
    );
    assert_eq!(create.input_schema["properties"]["assignee"]["type"], json!(["string", "null"]));
    assert_eq!(create.input_schema["properties"]["title"]["oneOf"], json!([{"type": "string"}, {"type": "integer"}]));
    let search = spec.tool("search_issues_and_pull_requests").unwrap();
    assert!(search.description.starts_with("(Deprecated) Search issues and pull requests"), "{}", search.description);
    // A parameter reached through components.parameters keeps its description and default.
    assert_eq!(
        search.input_schema["properties"]["page"]["default"],
        json!(1),
        "{}",
        search.input_schema["properties"]["page"]
    );
    insta::assert_json_snapshot!("github", spec);
}

#[test]
fn train_travel_openapi_3_1() {
    let imp = import_ok(TRAIN_TRAVEL);
    let spec = &imp.spec;
    let base = "https://try.microcks.io/rest/Train+Travel+API/1.0.0";
    assert_eq!(
        summary(spec),
        [
            format!("get_bookings GET {base}/bookings required=[] readOnly"),
            format!("create_booking POST {base}/bookings required=[]"),
            format!("get_booking GET {base}/bookings/{{bookingId}} required=[\"bookingId\"] readOnly"),
            format!("delete_booking DELETE {base}/bookings/{{bookingId}} required=[\"bookingId\"] destructive"),
            format!("create_booking_payment POST {base}/bookings/{{bookingId}}/payment required=[\"bookingId\"]"),
            format!("get_stations GET {base}/stations required=[] readOnly"),
            format!("get_trips GET {base}/trips required=[\"origin\", \"destination\", \"date\"] readOnly"),
        ]
    );
    assert_eq!(spec.allowed_hosts, ["try.microcks.io"]);
    assert_eq!(spec.credentials.len(), 1);
    let c = &spec.credentials[0];
    assert_eq!((c.key.as_str(), c.label.as_str(), c.required), ("OAUTH2", "Train Travel API OAuth access token", true));
    for t in &spec.tools {
        assert_eq!(http(spec, &t.name).headers["Authorization"], "Bearer {{credentials.OAUTH2}}", "{}", t.name);
    }
    // Read-only fields are the server's: the booking's id is not an argument.
    assert_eq!(http(spec, "create_booking").body_args, ["has_bicycle", "has_dog", "passenger_name", "trip_id"]);
    let pay = spec.tool("create_booking_payment").unwrap();
    assert_eq!(http(spec, "create_booking_payment").body_args, ["amount", "currency", "source"]);
    assert_eq!(pay.input_schema["properties"]["amount"]["exclusiveMinimum"], json!(0));
    assert_eq!(pay.input_schema["properties"]["source"]["anyOf"][0]["properties"]["object"]["const"], "card");
    assert_eq!(pay.input_schema["properties"]["bookingId"]["format"], "uuid");
    insta::assert_json_snapshot!("train_travel", spec);
}

#[test]
fn import_is_deterministic() {
    for doc in [PETSTORE, PETSTORE_EXPANDED, GITHUB, TRAIN_TRAVEL] {
        let a = import(doc, "").unwrap();
        let b = import(doc, "").unwrap();
        assert_eq!(a.spec.canonical_json(), b.spec.canonical_json());
        assert_eq!(a.warnings, b.warnings);
    }
}

#[test]
fn json_and_yaml_of_one_document_import_the_same() {
    let yaml: serde_yaml::Value = serde_yaml::from_str(PETSTORE).unwrap();
    let json_text = serde_json::to_string(&yaml).unwrap();
    assert_eq!(import(&json_text, "").unwrap().spec, import(PETSTORE, "").unwrap().spec);
}

#[test]
fn swagger_2_is_refused_with_advice() {
    let e = import_err("swagger: '2.0'\ninfo: {title: x, version: '1'}\nhost: api.example.com\npaths: {}\n");
    assert!(e.contains("Swagger 2.0") && e.contains("convert it to OpenAPI 3"), "{e}");
    let e = import_err(r#"{"swagger": "2.0", "paths": {}}"#);
    assert!(e.contains("Swagger 2.0"), "{e}");
}

#[test]
fn non_openapi_documents_are_refused() {
    assert!(import_err("name: my-service\nreplicas: 3\n").contains("no `openapi: 3.x` version field"));
    assert!(import_err("- just\n- a list\n").contains("not an OpenAPI document"));
    assert!(import_err("plain words, not a document").contains("not an OpenAPI document"));
    assert!(import_err("{\"openapi\": \"3.0.0\",").contains("not valid JSON"));
    assert!(import_err("openapi: 3.0.0\n  bad: indentation\n: x").contains("valid YAML"));
    assert!(import_err("openapi: 2.5.0\n").contains("only OpenAPI 3.0 and 3.1"));
    assert!(import_err("openapi: 4.0.0\n").contains("only OpenAPI 3.0 and 3.1"));
}

fn doc_with(servers: &str, paths: &str) -> String {
    format!("openapi: 3.0.3\ninfo: {{title: T, version: '1'}}\n{servers}\npaths:\n{paths}")
}

const ONE_GET: &str =
    "  /items:\n    get:\n      operationId: listItems\n      responses: {'200': {description: ok}}\n";

#[test]
fn servers_must_be_absolute() {
    let e = import_err(&doc_with("", ONE_GET));
    assert!(e.contains("has no `servers`"), "{e}");
    let e = import_err(&doc_with("servers: [{url: /v1}]", ONE_GET));
    assert!(e.contains("\"/v1\" is relative"), "{e}");
    let e = import_err(&doc_with("servers: [{url: 'ftp://files.example.com'}]", ONE_GET));
    assert!(e.contains("uses ftp"), "{e}");
    let e = import_err(&doc_with("servers: [{url: 'https://{region}.example.com'}]", ONE_GET));
    assert!(e.contains("not declared in `variables`"), "{e}");
}

#[test]
fn server_variables_take_their_defaults() {
    let servers = "servers:\n  - url: 'https://{region}.api.example.com:{port}/{version}'\n    variables:\n      region: {default: eu}\n      port: {default: '8443'}\n      version: {default: v2}";
    let imp = import_ok(&doc_with(servers, ONE_GET));
    assert_eq!(imp.spec.allowed_hosts, ["eu.api.example.com:8443"]);
    assert_eq!(http(&imp.spec, "list_items").url, "https://eu.api.example.com:8443/v2/items");
}

#[test]
fn documents_without_operations_are_refused() {
    let e = import_err(
        "openapi: 3.1.0\ninfo: {title: T, version: '1'}\nservers: [{url: 'https://a.example'}]\nwebhooks: {}\n",
    );
    assert!(e.contains("has no `paths`"), "{e}");
    let e = import_err(&doc_with("servers: [{url: 'https://a.example'}]", "  /x: {}\n"));
    assert!(e.contains("no operations"), "{e}");
}

#[test]
fn broken_refs_are_refused() {
    let paths = "  /items:\n    post:\n      requestBody:\n        content:\n          application/json:\n            schema: {$ref: '#/components/schemas/Nope'}\n      responses: {'200': {description: ok}}\n";
    let e = import_err(&doc_with("servers: [{url: 'https://a.example'}]", paths));
    assert!(e.contains("#/components/schemas/Nope") && e.contains("does not resolve"), "{e}");
}

#[test]
fn recursive_bodies_terminate() {
    let doc = r##"{"openapi": "3.0.0", "info": {"title": "Tree", "version": "1"}, "servers": [{"url": "https://tree.example"}],
      "paths": {"/nodes": {"post": {"operationId": "createNode", "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Node"}}}}, "responses": {"201": {"description": "ok"}}}}},
      "components": {"schemas": {"Node": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}}}}}}}"##;
    let imp = import_ok(doc);
    let t = imp.spec.tool("create_node").unwrap();
    assert_eq!(t.input_schema["required"], json!(["name"]));
    assert_eq!(
        t.input_schema["properties"]["children"]["items"],
        json!({"type": "object", "description": "A Node (recursive)"})
    );
}

fn secured(schemes: &str, security: &str) -> String {
    format!(
        "openapi: 3.0.3\ninfo: {{title: Acme, version: '1'}}\nservers: [{{url: 'https://api.acme.test'}}]\n\
         security: {security}\npaths:\n{ONE_GET}components:\n  securitySchemes:\n{schemes}"
    )
}

#[test]
fn security_schemes_become_credentials() {
    let cases = [
        (
            "    basicAuth: {type: http, scheme: basic}\n",
            "[{basicAuth: []}]",
            "BASIC_AUTH",
            "Authorization",
            "Basic {{credentials.BASIC_AUTH}}",
        ),
        (
            "    token: {type: http, scheme: bearer, bearerFormat: JWT}\n",
            "[{token: []}]",
            "TOKEN",
            "Authorization",
            "Bearer {{credentials.TOKEN}}",
        ),
        (
            "    key: {type: apiKey, in: header, name: X-API-Key}\n",
            "[{key: []}]",
            "KEY",
            "X-API-Key",
            "{{credentials.KEY}}",
        ),
        (
            "    sess: {type: apiKey, in: cookie, name: sid}\n",
            "[{sess: []}]",
            "SESS",
            "Cookie",
            "sid={{credentials.SESS}}",
        ),
        (
            "    oidc: {type: openIdConnect, openIdConnectUrl: 'https://acme.test/.well-known/openid-configuration'}\n",
            "[{oidc: []}]",
            "OIDC",
            "Authorization",
            "Bearer {{credentials.OIDC}}",
        ),
    ];
    for (schemes, security, key, header, value) in cases {
        let imp = import_ok(&secured(schemes, security));
        assert_eq!(imp.spec.credentials.len(), 1, "{schemes}");
        assert_eq!(imp.spec.credentials[0].key, key);
        assert!(imp.spec.credentials[0].required);
        assert_eq!(http(&imp.spec, "list_items").headers[header], value, "{schemes}");
    }
    let imp = import_ok(&secured("    k: {type: apiKey, in: query, name: api_key}\n", "[{k: []}]"));
    assert_eq!(http(&imp.spec, "list_items").query["api_key"], "{{credentials.K}}");
    let basic = import_ok(&secured("    basicAuth: {type: http, scheme: basic}\n", "[{basicAuth: []}]"));
    assert!(basic.spec.credentials[0].description.as_deref().unwrap().contains("base64"));
}

#[test]
fn optional_security_makes_an_optional_credential() {
    let imp = import_ok(&secured("    key: {type: apiKey, in: header, name: X-Key}\n", "[{}, {key: []}]"));
    assert_eq!(imp.spec.credentials.len(), 1);
    assert!(!imp.spec.credentials[0].required);
}

#[test]
fn unsupported_security_skips_the_operation() {
    let e = import_err(&secured("    mtls: {type: mutualTLS}\n", "[{mtls: []}]"));
    assert!(e.contains("none of its 1 operations") && e.contains("mtls (\"mutualTLS\" security)"), "{e}");
    // An alternative the server can supply is picked instead.
    let imp = import_ok(&secured(
        "    mtls: {type: mutualTLS}\n    key: {type: apiKey, in: header, name: X-Key}\n",
        "[{mtls: []}, {key: []}]",
    ));
    assert_eq!(http(&imp.spec, "list_items").headers["X-Key"], "{{credentials.KEY}}");
}

#[test]
fn non_json_and_non_object_bodies() {
    let paths = "  /upload:\n    post:\n      operationId: upload\n      requestBody:\n        content:\n          multipart/form-data:\n            schema: {type: object, properties: {file: {type: string, format: binary}}}\n      responses: {'200': {description: ok}}\n  /free:\n    post:\n      operationId: free\n      requestBody:\n        content:\n          application/json:\n            schema: {type: object, additionalProperties: true}\n      responses: {'200': {description: ok}}\n";
    let imp = import_ok(&doc_with("servers: [{url: 'https://a.example'}]", paths));
    assert_eq!(imp.spec.tools.len(), 1);
    assert!(imp.warnings[0].contains("multipart/form-data"), "{:?}", imp.warnings);
    let free = http(&imp.spec, "free");
    assert!(free.body_from_args);
    assert_eq!(imp.spec.tool("free").unwrap().input_schema["additionalProperties"], true);
}

#[test]
fn argument_name_clashes_are_resolved() {
    let paths = "  /items/{id}:\n    put:\n      operationId: putItem\n      parameters:\n        - {name: id, in: path, required: true, schema: {type: string}}\n        - {name: id, in: query, schema: {type: string}}\n        - {name: X-Trace.Id, in: header, schema: {type: string}}\n      requestBody:\n        required: true\n        content:\n          application/json:\n            schema: {type: object, required: [name], properties: {name: {type: string}, id: {type: string}}}\n      responses: {'200': {description: ok}}\n";
    let imp = import_ok(&doc_with("servers: [{url: 'https://a.example'}]", paths));
    let h = http(&imp.spec, "put_item");
    assert_eq!(h.url, "https://a.example/items/{id}");
    assert_eq!(h.query["id"], "{id_query}");
    assert_eq!(h.headers["X-Trace.Id"], "{X-Trace_Id}");
    assert_eq!(h.body_args, ["name"]);
    assert!(
        imp.warnings.iter().any(|w| w.contains("body field \"id\" clashes with a parameter")),
        "{:?}",
        imp.warnings
    );
}

#[test]
fn clip_counts_bytes_and_respects_characters() {
    assert_eq!(clip("short", 10), "short");
    let cut = clip(&"é".repeat(100), 11);
    assert!(cut.len() <= 11 && cut.ends_with('…'), "{cut}");
    assert_eq!(cut, "éééé…");
}

#[test]
fn check_document_applies_the_document_rules_but_not_the_http_limits() {
    assert!(check_document(PETSTORE).is_ok());
    assert!(check_document(PETSTORE3).unwrap_err().to_string().contains("is relative"));
    assert!(check_document("swagger: '2.0'\n").unwrap_err().to_string().contains("Swagger 2.0"));
    assert!(check_document(&doc_with("", ONE_GET)).unwrap_err().to_string().contains("no `servers`"));
    // Only a form body: nothing the offline importer can send, but a model may write a code handler.
    let form = "  /charges:\n    post:\n      requestBody:\n        required: true\n        content:\n          application/x-www-form-urlencoded:\n            schema: {type: object, properties: {amount: {type: integer}}}\n      responses: {'200': {description: ok}}\n";
    let doc = doc_with("servers: [{url: 'https://api.stripe.com'}]", form);
    assert!(import(&doc, "").is_err());
    assert!(check_document(&doc).is_ok());
}
