//! The OpenAPI 3.0 document of the API, written by hand (served at `/openapi.json`).

use serde_json::{Value, json};

fn param(name: &str, desc: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": desc, "schema": schema})
}

fn filters() -> Vec<Value> {
    vec![
        param(
            "order",
            "Order by sequenceNumber.",
            json!({"type": "string", "enum": ["asc", "desc"], "default": "asc"}),
        ),
        param(
            "cursor",
            "Sequence number the page starts at (ascending: at or above; descending: at or below); a page's nextCursor.",
            json!({"type": "integer", "minimum": 0}),
        ),
        param(
            "seq",
            "Sequence range FROM..TO, half-open (FROM included, TO excluded); either side may be left out; a single N selects one log.",
            json!({"type": "string", "example": "100..200"}),
        ),
        param(
            "time",
            "Timestamp range FROM..TO, half-open; RFC 3339 or epoch milliseconds; either side may be left out.",
            json!({"type": "string", "example": "2026-11-27T18:00:00Z..2026-11-27T19:00:00Z"}),
        ),
        param(
            "level",
            "Levels, comma-separated or repeated (any letter case).",
            json!({"type": "string", "example": "warn,error"}),
        ),
        param(
            "contains",
            "Substring the message must contain (case-sensitive).",
            json!({"type": "string"}),
        ),
    ]
}

fn episode_path() -> Value {
    json!({"name": "episodeId", "in": "path", "required": true,
           "description": "1-128 characters from [A-Za-z0-9._:-], starting with a letter or digit, no '..'",
           "schema": {"type": "string", "maxLength": 128}})
}

fn errors() -> Value {
    let e = json!({"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    // 410: the logs asked for were removed by the retention policy (code "expired").
    json!({"400": e, "401": e, "404": e, "410": e, "503": e, "500": e})
}

fn ok(schema: &str) -> Value {
    json!({"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn with_errors(mut responses: Value) -> Value {
    if let (Some(r), Some(e)) = (responses.as_object_mut(), errors().as_object()) {
        for (k, v) in e {
            r.insert(k.clone(), v.clone());
        }
    }
    responses
}

/// The document.
pub fn document() -> Value {
    let limit = param(
        "limit",
        "Page size, 1 to query.max_page_size (10,000 by default); default query.default_page_size (1,000).",
        json!({"type": "integer", "minimum": 1, "maximum": 10000}),
    );
    let mut log_params = vec![episode_path(), limit.clone()];
    log_params.extend(filters());
    log_params.push(param(
        "follow",
        "Stream new logs as they are written (NDJSON, never ends by itself), like tail -f.",
        json!({"type": "boolean", "default": false}),
    ));
    log_params.push(param(
        "backlog",
        "With follow=true and no cursor: how many of the latest matching logs to send first.",
        json!({"type": "integer", "minimum": 0, "default": 0}),
    ));
    let mut export_params = vec![
        episode_path(),
        param(
            "format",
            "ndjson or jsonl.gz.",
            json!({"type": "string", "enum": ["ndjson", "jsonl.gz"], "default": "ndjson"}),
        ),
    ];
    export_params.extend(filters());
    let datetime = json!({"type": "string", "format": "date-time"});
    let odt = json!({"type": "string", "format": "date-time", "nullable": true});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "logfleet query API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "An episode's logs, wherever they are: hot in MongoDB or archived in S3 chunks. Every matching log is returned exactly once, in sequence order, even while it is being archived."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string", "enum": ["bad_request", "unauthorized", "not_found", "expired", "method_not_allowed", "unavailable", "internal"]},
                    "message": {"type": "string"}}}}},
                "LogRecord": {"type": "object", "required": ["id", "episodeId", "timestamp", "level", "message", "sequenceNumber", "createdAt"], "properties": {
                    "id": {"type": "string"}, "episodeId": {"type": "string"}, "timestamp": datetime,
                    "level": {"type": "string", "enum": ["debug", "info", "warn", "error", "fatal"]},
                    "message": {"type": "string"}, "metadata": {"type": "object"},
                    "sequenceNumber": {"type": "integer"}, "createdAt": datetime}},
                "LogPage": {"type": "object", "required": ["episodeId", "order", "logs", "nextCursor"], "properties": {
                    "episodeId": {"type": "string"}, "order": {"type": "string", "enum": ["asc", "desc"]},
                    "logs": {"type": "array", "items": {"$ref": "#/components/schemas/LogRecord"}},
                    "nextCursor": {"type": "integer", "nullable": true, "description": "Absent (null) when the page ended the selection."}}},
                "EpisodeStats": {"type": "object", "properties": {
                    "episodeId": {"type": "string"}, "totalLogs": {"type": "integer"}, "currentLogs": {"type": "integer"},
                    "archivedLogs": {"type": "integer"}, "totalChunks": {"type": "integer"}, "nextSequenceNumber": {"type": "integer"},
                    "firstLogAt": odt, "lastLogAt": odt, "currentMongoBytes": {"type": "integer"}, "archivedS3Bytes": {"type": "integer"},
                    "levelCounts": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "archiveThreshold": {"type": "integer"}, "chunkSize": {"type": "integer"}, "isArchiving": {"type": "boolean"},
                    "lastArchivedAt": odt, "updatedAt": datetime,
                    "expiredBelow": {"type": "integer", "description": "Retention: logs below this sequence number are removed (410 Gone)."},
                    "expiredChunks": {"type": "integer"}, "expiredS3Bytes": {"type": "integer"},
                    "expiredAt": odt, "expiryReason": {"type": "string", "nullable": true}}},
                "ChunkInfo": {"type": "object", "properties": {
                    "chunkNumber": {"type": "integer"}, "startSequence": {"type": "integer"}, "endSequence": {"type": "integer"},
                    "startTime": datetime, "endTime": datetime, "logCount": {"type": "integer"}, "src": {"type": "string"},
                    "sizeBytes": {"type": "integer"}, "createdAt": datetime, "lastAccessed": datetime}},
                "ChunkPage": {"type": "object", "properties": {"episodeId": {"type": "string"},
                    "chunks": {"type": "array", "items": {"$ref": "#/components/schemas/ChunkInfo"}},
                    "nextCursor": {"type": "integer", "nullable": true}}},
                "EpisodeSummary": {"type": "object", "properties": {
                    "episodeId": {"type": "string"}, "totalLogs": {"type": "integer"}, "currentLogs": {"type": "integer"},
                    "archivedLogs": {"type": "integer"}, "totalChunks": {"type": "integer"}, "firstLogAt": odt, "lastLogAt": odt,
                    "levelCounts": {"type": "object", "additionalProperties": {"type": "integer"}}}},
                "EpisodePage": {"type": "object", "properties": {
                    "episodes": {"type": "array", "items": {"$ref": "#/components/schemas/EpisodeSummary"}},
                    "nextCursor": {"type": "string", "nullable": true}}}
            }
        },
        "paths": {
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
            "/readyz": {"get": {"summary": "Readiness: MongoDB answers", "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.0"}}}},
            "/": {"get": {"summary": "The episode viewer (HTML; its scripts and styles are under /assets/). Open without auth; it asks for the token when the API needs one.",
                "responses": {"200": {"description": "HTML page", "content": {"text/html": {}}}}}},
            "/v1/episodes": {"get": {"summary": "Episodes, by id or by latest log, optionally those whose id starts with a prefix", "security": [{"bearer": []}],
                "parameters": [
                    param("prefix", "Only episodes whose id starts with this (case-sensitive).", json!({"type": "string", "maxLength": 128})),
                    param("sort", "id: ascending episode id. lastLogAt: latest log first (ties by id), then the episodes without logs, by id.", json!({"type": "string", "enum": ["id", "lastLogAt"], "default": "id"})),
                    param("cursor", "Where the page starts: a page's nextCursor for the same sort (with sort=id, an episode id).", json!({"type": "string"})),
                    limit.clone()],
                "responses": with_errors(json!({"200": ok("EpisodePage")}))}},
            "/v1/episodes/{episodeId}/stats": {"get": {"summary": "An episode's statistics (LogMetadata)", "security": [{"bearer": []}],
                "parameters": [episode_path()], "responses": with_errors(json!({"200": ok("EpisodeStats")}))}},
            "/v1/episodes/{episodeId}/chunks": {"get": {"summary": "An episode's committed chunks (LogChunk)", "security": [{"bearer": []}],
                "parameters": [episode_path(), param("cursor", "Chunk number the page starts at.", json!({"type": "integer", "minimum": 0})), limit],
                "responses": with_errors(json!({"200": ok("ChunkPage")}))}},
            "/v1/episodes/{episodeId}/logs": {"get": {"summary": "A page of an episode's logs, from both tiers; or, with follow=true, an NDJSON stream of new logs", "security": [{"bearer": []}],
                "parameters": log_params,
                "responses": with_errors(json!({"200": {"description": "A page (JSON), or with follow=true an NDJSON stream of LogRecord",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LogPage"}},
                                "application/x-ndjson": {"schema": {"$ref": "#/components/schemas/LogRecord"}}}}}))}},
            "/v1/episodes/{episodeId}/export": {"get": {"summary": "Every matching log as a stream: NDJSON or JSONL.gz", "security": [{"bearer": []}],
                "parameters": export_params,
                "responses": with_errors(json!({"200": {"description": "One LogRecord per line",
                    "content": {"application/x-ndjson": {}, "application/gzip": {}}}}))}}
        }
    })
}
