//! The names on our spans, in one place: the OpenTelemetry GenAI semantic conventions
//! (`semantic-conventions-genai`, status Development) with their MCP part, and our own
//! attributes under `persona_runner.`. Written here rather than taken from the crate's
//! `semconv_experimental` constants, which are deprecated upstream and lag the
//! conventions.

// Operations (`gen_ai.operation.name`) and the span names built from them.
pub const INVOKE_AGENT: &str = "invoke_agent";
pub const CHAT: &str = "chat";
pub const EXECUTE_TOOL: &str = "execute_tool";

// GenAI attributes.
pub const OPERATION_NAME: &str = "gen_ai.operation.name";
pub const PROVIDER_NAME: &str = "gen_ai.provider.name";
pub const REQUEST_MODEL: &str = "gen_ai.request.model";
pub const REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
pub const REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
pub const RESPONSE_MODEL: &str = "gen_ai.response.model";
pub const RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
pub const USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
pub const USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
pub const CONVERSATION_ID: &str = "gen_ai.conversation.id";
pub const AGENT_NAME: &str = "gen_ai.agent.name";
pub const AGENT_ID: &str = "gen_ai.agent.id";
pub const TOOL_NAME: &str = "gen_ai.tool.name";
pub const TOOL_CALL_ID: &str = "gen_ai.tool.call.id";
pub const TOOL_TYPE: &str = "gen_ai.tool.type";
/// Opt-in content (`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`).
pub const INPUT_MESSAGES: &str = "gen_ai.input.messages";
pub const OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
pub const SYSTEM_INSTRUCTIONS: &str = "gen_ai.system_instructions";
pub const TOOL_CALL_ARGUMENTS: &str = "gen_ai.tool.call.arguments";
pub const TOOL_CALL_RESULT: &str = "gen_ai.tool.call.result";

// MCP attributes (added to `execute_tool`, not a second span).
pub const MCP_METHOD_NAME: &str = "mcp.method.name";
pub const MCP_SESSION_ID: &str = "mcp.session.id";
pub const MCP_PROTOCOL_VERSION: &str = "mcp.protocol.version";
pub const NETWORK_TRANSPORT: &str = "network.transport";
pub const SERVER_ADDRESS: &str = "server.address";
pub const ERROR_TYPE: &str = "error.type";
/// `error.type` of a result with `isError`.
pub const TOOL_ERROR: &str = "tool_error";

// Our own.
pub const TICK_STATUS: &str = "persona_runner.tick.status";
pub const TICK_TRIGGER: &str = "persona_runner.tick.trigger";
pub const ARCHETYPE: &str = "persona_runner.persona.archetype";
pub const TARGET: &str = "persona_runner.target";
pub const SIMULATOR: &str = "persona_runner.simulator";
pub const SPACE: &str = "persona_runner.space";
pub const CALL_RESULT: &str = "persona_runner.call.result";
pub const CALL_SENT: &str = "persona_runner.call.sent";
pub const CALL_MODULE: &str = "persona_runner.call.module";
pub const CALL_SEQ: &str = "persona_runner.call.seq";
pub const CALL_REFUSAL: &str = "persona_runner.call.refusal";
pub const CALL_RECOVERED: &str = "persona_runner.call.recovered";
pub const CALL_CHAOS: &str = "persona_runner.call.chaos";
pub const TURN: &str = "persona_runner.turn";
pub const PURPOSE: &str = "persona_runner.purpose";
pub const LOGIN_MODE: &str = "persona_runner.login.mode";
pub const TOOLS_OFFERED: &str = "persona_runner.tools.offered";
pub const RATING_STATUS: &str = "persona_runner.rating.status";
pub const SERVER_REQUEST: &str = "persona_runner.server_request";
pub const SERVER_REQUEST_ANSWER: &str = "persona_runner.server_request.answer";

// The span names of the steps that are not GenAI operations.
pub const LOGIN: &str = "login";
pub const CONNECT: &str = "mcp connect";
pub const RATING: &str = "rating";
pub const JUDGE: &str = "judge";
