//! Just enough `multipart/form-data` parsing for media uploads.

use bytes::Bytes;

#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Bytes,
}

/// The boundary from a `Content-Type: multipart/form-data; boundary=...` header value.
pub fn boundary(content_type: &str) -> Option<String> {
    if !content_type.starts_with("multipart/form-data") {
        return None;
    }
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Splits a body into parts; `Err` with a reason when it is malformed.
pub fn parse(body: &Bytes, boundary: &str) -> Result<Vec<Part>, String> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut pos = find(body, delim, 0).ok_or("multipart boundary not found")?;
    let mut parts = Vec::new();
    loop {
        pos += delim.len();
        if body[pos..].starts_with(b"--") {
            return Ok(parts);
        }
        // Skip the CRLF after the delimiter.
        if body[pos..].starts_with(b"\r\n") {
            pos += 2;
        }
        let head_end = find(body, b"\r\n\r\n", pos).ok_or("multipart part without headers end")?;
        let head = String::from_utf8_lossy(&body[pos..head_end]);
        let data_start = head_end + 4;
        let next = find(body, delim, data_start).ok_or("multipart part not terminated")?;
        let data_end = if next >= 2 && &body[next - 2..next] == b"\r\n" {
            next - 2
        } else {
            next
        };
        let mut part = Part {
            name: String::new(),
            filename: None,
            content_type: None,
            data: body.slice(data_start..data_end.max(data_start)),
        };
        for line in head.split("\r\n") {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim();
            if k == "content-disposition" {
                for attr in v.split(';').skip(1) {
                    if let Some((ak, av)) = attr.trim().split_once('=') {
                        let av = av.trim().trim_matches('"').to_string();
                        match ak.trim() {
                            "name" => part.name = av,
                            "filename" => part.filename = Some(av),
                            _ => {}
                        }
                    }
                }
            } else if k == "content-type" {
                part.content_type = Some(v.to_string());
            }
        }
        parts.push(part);
        pos = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_and_file() {
        let body = Bytes::from_static(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"messaging_product\"\r\n\r\nwhatsapp\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8\r\n\xff\r\n\
--XyZ--\r\n",
        );
        let b = boundary("multipart/form-data; boundary=XyZ").unwrap_or_default();
        let parts = parse(&body, &b).unwrap_or_default();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "messaging_product");
        assert_eq!(&parts[0].data[..], b"whatsapp");
        assert_eq!(parts[1].filename.as_deref(), Some("a.jpg"));
        assert_eq!(parts[1].content_type.as_deref(), Some("image/jpeg"));
        assert_eq!(&parts[1].data[..], b"\xff\xd8\r\n\xff");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(&Bytes::from_static(b"nothing"), "b").is_err());
        assert_eq!(boundary("application/json"), None);
    }
}
