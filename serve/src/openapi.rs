//! The OpenAPI 3.1 description of the REST API (`GET /v1/openapi.json`).

use serde_json::{Value, json};

/// The document. Skill input schemas are per skill: `GET /v1/skills/{name}` has each.
pub fn document() -> Value {
    let problem = json!({ "$ref": "#/components/schemas/Problem" });
    let problem_response = |description: &str| json!({ "description": description, "content": { "application/problem+json": { "schema": problem } } });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "skillbox",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Run sandboxed skills with capability-scoped secrets. Every call runs as the user and environment its API key fixes."
        },
        "security": [{ "bearer": [] }],
        "paths": {
            "/v1/skills": { "get": {
                "summary": "The skills this key may call",
                "responses": {
                    "200": { "description": "Skills with their schemas", "content": { "application/json": { "schema": {
                        "type": "object", "properties": { "skills": { "type": "array", "items": { "$ref": "#/components/schemas/Skill" } } }
                    } } } },
                    "401": problem_response("No valid API key")
                }
            } },
            "/v1/skills/{name}": { "get": {
                "summary": "One skill",
                "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": {
                    "200": { "description": "The skill", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Skill" } } } },
                    "401": problem_response("No valid API key"),
                    "404": problem_response("No such skill (or not one this key may call)")
                }
            } },
            "/v1/skills/{name}/invoke": { "post": {
                "summary": "Run a skill",
                "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object" } } } },
                "responses": {
                    "200": { "description": "The skill's JSON result", "content": { "application/json": {} } },
                    "400": problem_response("The input is not JSON or does not match the skill's input schema"),
                    "401": problem_response("No valid API key"),
                    "403": problem_response("A credential was denied, or the skill tripped the leak tripwire"),
                    "404": problem_response("No such skill"),
                    "422": problem_response("The skill hit a limit (time, memory, fuel, host calls)"),
                    "429": problem_response("The server is at capacity; retry after the Retry-After header"),
                    "502": problem_response("The skill failed or trapped")
                }
            } }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "description": "An API key from `skillbox apikey create`" } },
            "schemas": {
                "Skill": { "type": "object", "properties": {
                    "name": { "type": "string" }, "description": { "type": "string" },
                    "input_schema": { "type": "object" }, "output_schema": { "type": ["object", "null"] }
                } },
                "Problem": { "type": "object", "properties": {
                    "type": { "type": "string" }, "title": { "type": "string" }, "status": { "type": "integer" },
                    "detail": { "type": "string" }, "skill": { "type": "string" }
                } }
            }
        }
    })
}
