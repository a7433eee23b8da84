//! An error and its causes as one line, for messages that must fit on one (a refused
//! start, a log field).

/// An error and its causes on one line. A cause that its error already quotes at its end
/// (as deadpool's and tokio-postgres's errors do) is written once.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        cause: Option<Box<Layer>>,
    }

    fn layer(text: &'static str, cause: Option<Layer>) -> Layer {
        Layer {
            text,
            cause: cause.map(Box::new),
        }
    }

    #[test]
    fn an_error_chain_is_one_line_and_says_each_cause_once() {
        let quoted = layer(
            "pool: handshake failed",
            Some(layer(
                "handshake failed",
                Some(layer("certificate not valid", None)),
            )),
        );
        assert_eq!(
            error_chain(&quoted),
            "pool: handshake failed: certificate not valid"
        );
        let plain = layer("cannot connect", Some(layer("refused", None)));
        assert_eq!(error_chain(&plain), "cannot connect: refused");
    }
}
