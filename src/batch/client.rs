//! The batch lane's HTTP calls: upload, create, look up, poll, cancel and download, in
//! either provider's dialect.
//!
//! One pooled reqwest client with the API's shared headers (secrets included) marked
//! sensitive, as the runner's transport does; nothing here is stored or logged but ids,
//! statuses and the provider's error messages.

use std::time::Duration;

use super::dialect::{self, BatchView, KEY_FIELD};
use crate::config::BatchProvider;

/// Why a Batch API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A configured header name or value is not valid HTTP.
    #[error(
        "header `{name}` has an invalid name or value\n  hint: header values must be visible ASCII; check the environment variable it references"
    )]
    Header {
        /// The header's name (its value is never shown).
        name: String,
    },
    /// No response: connection, timeout or a body that could not be read.
    #[error("{doing}: {message}")]
    Transport {
        /// The call, e.g. `creating a batch`.
        doing: &'static str,
        /// reqwest's description.
        message: String,
    },
    /// The provider answered with an error status.
    #[error("{doing}: the provider answered {status}: {message}")]
    Status {
        /// The call.
        doing: &'static str,
        /// The HTTP status.
        status: u16,
        /// The start of the provider's error body.
        message: String,
    },
    /// The provider answered 2xx with a body that is not what the API documents.
    #[error("{doing}: the provider's answer is not a batch object")]
    Unexpected {
        /// The call.
        doing: &'static str,
    },
}

impl ClientError {
    /// Whether trying again later may succeed (no response, 429, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport { .. } => true,
            ClientError::Status { status, .. } => *status == 429 || *status >= 500,
            ClientError::Header { .. } | ClientError::Unexpected { .. } => false,
        }
    }

    /// Whether the provider refused a batch for its enqueued-token limit.
    pub fn is_token_limit(&self) -> bool {
        matches!(self, ClientError::Status { status, message, .. }
            if *status == 429 || message.contains("token_limit") || message.contains("Enqueued token"))
    }
}

/// What a new batch is created from.
pub enum Input<'a> {
    /// OpenAI: an uploaded file and the endpoint its lines call.
    File {
        /// The input file's id.
        file_id: &'a str,
        /// The lines' `url`, e.g. `/v1/chat/completions`.
        endpoint: &'a str,
    },
    /// Anthropic: the request lines themselves.
    Lines(&'a [String]),
}

/// A Batch API client for one provider.
pub struct BatchClient {
    client: reqwest::Client,
    base_url: String,
    provider: BatchProvider,
    window: String,
}

impl BatchClient {
    /// A client for `base_url` sending `headers` (resolved, marked sensitive) with every
    /// call, asking for completion within `window`.
    pub fn new(
        base_url: &str,
        headers: &[(String, String)],
        provider: BatchProvider,
        window: Duration,
        timeout: Duration,
    ) -> Result<BatchClient, ClientError> {
        let map = crate::runner::transport::sensitive_headers(headers).map_err(|e| match e {
            crate::runner::transport::ClientError::Header { name } => ClientError::Header { name },
            other => ClientError::Transport {
                doing: "building the HTTP client",
                message: other.to_string(),
            },
        })?;
        let client = reqwest::Client::builder()
            .default_headers(map)
            .timeout(timeout.max(Duration::from_secs(60)))
            .build()
            .map_err(|e| ClientError::Transport {
                doing: "building the HTTP client",
                message: e.to_string(),
            })?;
        let hours = window.as_secs().div_ceil(3600).max(24);
        Ok(BatchClient {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            provider,
            window: format!("{hours}h"),
        })
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base_url)
        }
    }

    async fn send(
        &self,
        doing: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<Vec<u8>, ClientError> {
        let transport = |e: reqwest::Error| ClientError::Transport {
            doing,
            message: e.without_url().to_string(),
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(transport)?.to_vec();
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(&body);
            return Err(ClientError::Status {
                doing,
                status,
                message: text.chars().take(300).collect(),
            });
        }
        Ok(body)
    }

    fn view(&self, doing: &'static str, body: &[u8]) -> Result<BatchView, ClientError> {
        dialect::parse_batch(self.provider, body).ok_or(ClientError::Unexpected { doing })
    }

    /// OpenAI: uploads `lines` as a JSONL file with `purpose=batch`; returns its id.
    pub async fn upload(&self, name: &str, lines: &[String]) -> Result<String, ClientError> {
        let boundary = format!("ratebound-boundary-{:016x}", rand::random::<u64>());
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n"
        );
        for line in lines {
            body.push_str(line);
            body.push('\n');
        }
        body.push_str(&format!("\r\n--{boundary}--\r\n"));
        let request = self
            .client
            .post(self.url("/v1/files"))
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        let doing = "uploading a batch file";
        let answer = self.send(doing, request).await?;
        serde_json::from_slice::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_string))
            .ok_or(ClientError::Unexpected { doing })
    }

    /// Creates a batch tagged with `key` (OpenAI's metadata; Anthropic has none).
    pub async fn create(&self, key: &str, input: Input<'_>) -> Result<BatchView, ClientError> {
        let doing = "creating a batch";
        let (path, body) = match input {
            Input::File { file_id, endpoint } => (
                "/v1/batches",
                serde_json::json!({
                    "input_file_id": file_id,
                    "endpoint": endpoint,
                    "completion_window": self.window,
                    "metadata": { KEY_FIELD: key },
                })
                .to_string(),
            ),
            Input::Lines(lines) => (
                "/v1/messages/batches",
                format!("{{\"requests\":[{}]}}", lines.join(",")),
            ),
        };
        let request = self
            .client
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.view(doing, &self.send(doing, request).await?)
    }

    /// The provider's batches, newest first, up to `pages` pages of 100.
    pub async fn list(&self, pages: usize) -> Result<Vec<BatchView>, ClientError> {
        let path = match self.provider {
            BatchProvider::OpenAi => "/v1/batches",
            BatchProvider::Anthropic => "/v1/messages/batches",
        };
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..pages {
            let mut query = vec![("limit", "100".to_string())];
            if let Some(id) = &after {
                let key = match self.provider {
                    BatchProvider::OpenAi => "after",
                    BatchProvider::Anthropic => "after_id",
                };
                query.push((key, id.clone()));
            }
            let request = self.client.get(self.url(path)).query(&query);
            let body = self.send("listing batches", request).await?;
            let (views, next) = dialect::parse_list(self.provider, &body);
            all.extend(views);
            match next {
                Some(id) => after = Some(id),
                None => break,
            }
        }
        Ok(all)
    }

    /// The batch `id` as the provider sees it now.
    pub async fn get(&self, id: &str) -> Result<BatchView, ClientError> {
        let doing = "polling a batch";
        let request = self.client.get(self.url(&self.batch_path(id, "")));
        self.view(doing, &self.send(doing, request).await?)
    }

    /// Asks the provider to cancel batch `id`.
    pub async fn cancel(&self, id: &str) -> Result<BatchView, ClientError> {
        let doing = "cancelling a batch";
        let request = self.client.post(self.url(&self.batch_path(id, "/cancel")));
        self.view(doing, &self.send(doing, request).await?)
    }

    fn batch_path(&self, id: &str, tail: &str) -> String {
        match self.provider {
            BatchProvider::OpenAi => format!("/v1/batches/{id}{tail}"),
            BatchProvider::Anthropic => format!("/v1/messages/batches/{id}{tail}"),
        }
    }

    /// The text of an output or error file (OpenAI: its id) or of a results URL (Anthropic).
    pub async fn download(&self, file: &str) -> Result<String, ClientError> {
        let path = match self.provider {
            BatchProvider::OpenAi => format!("/v1/files/{file}/content"),
            BatchProvider::Anthropic => file.to_string(),
        };
        let body = self
            .send(
                "downloading batch results",
                self.client.get(self.url(&path)),
            )
            .await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}
