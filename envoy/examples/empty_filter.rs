//! An empty proxy-wasm HTTP filter (same SDK as the portcullis filter): it
//! only returns Continue. The benchmarks compare against it to separate the
//! cost of running any wasm filter from the cost of deciding.
//!
//! Build: `cargo build --release --target wasm32-wasip1 -p portcullis-envoy --example empty_filter`

#[cfg(target_arch = "wasm32")]
mod filter {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType, LogLevel};

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Warn);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
    }}

    struct Root;
    impl Context for Root {}
    impl RootContext for Root {
        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Empty))
        }
        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct Empty;
    impl Context for Empty {}
    impl HttpContext for Empty {
        fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
            Action::Continue
        }
    }
}
