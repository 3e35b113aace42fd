pub mod openai; pub mod anthropic; pub mod gemini; pub mod sse;
