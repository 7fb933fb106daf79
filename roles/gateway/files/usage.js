// Token counts for the usage audit log, read from vLLM's replies as they
// pass through the gateway. Only the two numbers of the "usage" object are
// kept (in the request's own variables, for its log line); the reply goes on
// to the client untouched and is never stored.
//
// vLLM ends a JSON reply with the usage object, and a stream with an event
// that carries it (every stream with --enable-force-include-usage, see
// roles/vllm). The text of a reply cannot forge one: inside a JSON string
// every quote is escaped, so '"usage"' only ever appears as a key.

var KEEP = 512; // characters carried over to the next buffer (one usage object fits)
var PROMPT = /"prompt_tokens"\s*:\s*(\d+)\s*[,}]/;
var COMPLETION = /"completion_tokens"\s*:\s*(\d+)\s*[,}]/;

function scan(r, data, flags) {
    r.sendBuffer(data, flags);
    var text = r.variables.gateway_usage_tail + data.toString();
    var at = text.lastIndexOf('"usage"');
    if (at >= 0) {
        var usage = text.slice(at);
        var prompt = usage.match(PROMPT);
        var completion = usage.match(COMPLETION);
        if (prompt && completion) {
            r.variables.gateway_prompt_tokens = prompt[1];
            r.variables.gateway_completion_tokens = completion[1];
        }
    }
    r.variables.gateway_usage_tail = text.length > KEEP ? text.slice(-KEEP) : text;
}

export default {scan};
