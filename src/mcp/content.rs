//! A tool result as text for the audit and the model: text and embedded text kept,
//! resource links named, binary content (image, audio, blobs) replaced by a short
//! placeholder, so the output cap is spent on what a persona can read. Structured content
//! is used when the result carries it (it is the machine-readable form of the answer).

use base64::Engine as _;
use rmcp::model::{CallToolResult, ContentBlock, ResourceContents};

/// The decoded size of base64 `data`, without decoding it.
fn decoded_size(data: &str) -> usize {
    let trimmed = data.trim_end_matches('=');
    trimmed.len() * 3 / 4
}

fn size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    }
}

fn block_text(block: &ContentBlock) -> String {
    match block {
        ContentBlock::Text(text) => text.text.clone(),
        ContentBlock::Image(image) => format!("[image {}, {}]", image.mime_type, size(decoded_size(&image.data))),
        ContentBlock::Audio(audio) => format!("[audio {}, {}]", audio.mime_type, size(decoded_size(&audio.data))),
        ContentBlock::ResourceLink(link) => match &link.description {
            Some(description) => format!("[resource {} <{}>: {description}]", link.name, link.uri),
            None => format!("[resource {} <{}>]", link.name, link.uri),
        },
        ContentBlock::Resource(embedded) => match &embedded.resource {
            ResourceContents::TextResourceContents { uri, text, .. } => format!("[resource <{uri}>]\n{text}"),
            ResourceContents::BlobResourceContents {
                uri, mime_type, blob, ..
            } => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(blob.as_bytes())
                    .map(|b| b.len())
                    .unwrap_or_else(|_| decoded_size(blob));
                format!(
                    "[blob <{uri}> {}, {}]",
                    mime_type.as_deref().unwrap_or("application/octet-stream"),
                    size(bytes)
                )
            }
            _ => "[resource of an unknown kind]".to_string(),
        },
        _ => "[content of an unknown kind]".to_string(),
    }
}

/// The text of a result: structured content when present, else the content blocks.
pub(super) fn render(result: &CallToolResult) -> String {
    if let Some(structured) = result.structured_content.as_ref().filter(|v| !v.is_null()) {
        let mut text = structured.to_string();
        // Binary blocks beside it are named, so the record says they were there.
        for block in &result.content {
            if matches!(block, ContentBlock::Image(_) | ContentBlock::Audio(_)) {
                text.push('\n');
                text.push_str(&block_text(block));
            }
        }
        return text;
    }
    result.content.iter().map(block_text).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn binary_content_becomes_a_placeholder_and_text_after_it_is_kept() {
        let picture = "A".repeat(40_000);
        let result: CallToolResult = serde_json::from_value(json!({"content": [
            {"type": "image", "data": picture, "mimeType": "image/png"},
            {"type": "text", "text": "the chart shows growth"},
            {"type": "resource_link", "uri": "file:///r.csv", "name": "r.csv"},
            {"type": "resource", "resource": {"uri": "file:///n.txt", "text": "note body"}},
            {"type": "resource", "resource": {"uri": "file:///b.bin", "blob": "AAAA", "mimeType": "application/zip"}}
        ]}))
        .unwrap();
        let text = render(&result);
        assert_eq!(
            text,
            "[image image/png, 29.3 KiB]\nthe chart shows growth\n[resource r.csv <file:///r.csv>]\n\
             [resource <file:///n.txt>]\nnote body\n[blob <file:///b.bin> application/zip, 3 bytes]"
        );
    }

    #[test]
    fn structured_content_wins() {
        let result: CallToolResult = serde_json::from_value(json!({
            "content": [{"type": "text", "text": "{\"n\": 1}"}],
            "structuredContent": {"n": 1}
        }))
        .unwrap();
        assert_eq!(render(&result), r#"{"n":1}"#);
    }
}
