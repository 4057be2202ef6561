import ApusFormats
import ApusScheduler
import ApusServer
import ApusTokenizers
import Foundation
import XCTest

/// SmolLM2-135M-Instruct's `tokenizer.chat_template`, as its GGUF ships it.
let smolLM2ChatTemplate =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"

/// The ChatML renderer against prompts written by hand from the templates' text.
final class OpenAICompletionChatTemplateTests: XCTestCase {
    func testSmolLM2TemplateAddsItsDefaultSystemMessage() throws {
        let template = ChatTemplate(source: smolLM2ChatTemplate)
        XCTAssertEqual(
            template.format, .chatML(defaultSystemPrompt: "You are a helpful AI assistant named SmolLM, trained by Hugging Face"))
        XCTAssertEqual(
            try template.render([ChatMessage(.user, "What is the capital of France?")]),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                + "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                + "<|im_start|>assistant\n")
        // A conversation that starts with its own system message gets no default one.
        XCTAssertEqual(
            try template.render([
                ChatMessage(.system, "Answer in one word."), ChatMessage(.user, "Hi"), ChatMessage(.assistant, "Hello!"),
                ChatMessage(.user, "Capital of Italy?"),
            ]),
            "<|im_start|>system\nAnswer in one word.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                + "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nCapital of Italy?<|im_end|>\n"
                + "<|im_start|>assistant\n")
        XCTAssertEqual(
            try template.render([ChatMessage(.user, "Hi")], addGenerationPrompt: false),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                + "<|im_start|>user\nHi<|im_end|>\n")
    }

    func testTheGGUFCarriesTheTemplate() throws {
        guard FileManager.default.fileExists(atPath: defaultModelPath) else {
            throw XCTSkip("the default model is not at \(defaultModelPath): run `make models`")
        }
        let template = try XCTUnwrap(ChatTemplate(gguf: try GGUFFile(path: defaultModelPath)))
        XCTAssertEqual(template.source, smolLM2ChatTemplate)
    }

    func testOtherTemplates() throws {
        // ChatML without a default system message (written with Jinja's \n escapes).
        let plain = ChatTemplate(
            source: #"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"#)
        XCTAssertEqual(plain.format, .chatML(defaultSystemPrompt: nil))
        XCTAssertEqual(try plain.render([ChatMessage(.user, "Hi")]), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        // Qwen2's way of writing the default system message, with \n escapes.
        let qwen = ChatTemplate(
            source: #"{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"#)
        XCTAssertEqual(qwen.format, .chatML(defaultSystemPrompt: "You are a helpful assistant."))
        // Llama 2's [INST] format is not ChatML: refused, not guessed.
        let llama = ChatTemplate(
            source: "{% for message in messages %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}{% endfor %}")
        XCTAssertNil(llama.format)
        XCTAssertThrowsError(try llama.render([ChatMessage(.user, "Hi")])) { XCTAssertEqual($0 as? ChatTemplateError, .unsupportedFormat) }
    }
}

/// A byte-level model installed next to SmolLM2 in the shared server, once.
enum SharedByteModel {
    static let id = "byte-softmax-lm"
    static let installed: Bool = {
        guard let server = SharedGenerationServer.server else { return false }
        let directory = repositoryRoot.appendingPathComponent("Models/trained/\(id)").path
        guard let engine = try? GenerationScheduler.loadByteDecoder(directory: directory, modelID: id, threads: 1, kvCacheBytes: 16 << 20)
        else { return false }
        server.models.install(engine)
        return true
    }()
}

/// `/v1/completions` and `/v1/chat/completions` on the shared server (SmolLM2 by default).
final class OpenAICompletionRoutesTests: GenerationServerTestCase {
    static let prompt = "The capital of France is"
    static let question = #"[{"role":"user","content":"What is the capital of France?"}]"#

    /// An SSE body as OpenAI writes it: `data: {json}` events, the last `data: [DONE]`.
    func chunks(_ body: String, file: StaticString = #filePath, line: UInt = #line) throws -> [[String: Any]] {
        let blocks = body.components(separatedBy: "\n\n").filter { !$0.isEmpty }
        XCTAssertEqual(blocks.last, "data: [DONE]", "the stream must end with data: [DONE]", file: file, line: line)
        XCTAssertEqual(blocks.filter { $0 == "data: [DONE]" }.count, 1, file: file, line: line)
        return try blocks.dropLast().map { block in
            XCTAssertTrue(block.hasPrefix("data: {"), block, file: file, line: line)
            return try object(String(block.dropFirst(6)))
        }
    }

    func choice(_ json: [String: Any]) throws -> [String: Any] {
        let choices = try XCTUnwrap(json["choices"] as? [[String: Any]], "\(json)")
        XCTAssertEqual(choices.count, 1)
        XCTAssertEqual(choices.first?["index"] as? Int, 0)
        return try XCTUnwrap(choices.first)
    }

    /// Asserts an OpenAI error: status, `type`, `code` and `param`, and that the message names `mention`.
    func assertOpenAIError(
        _ path: String, _ body: String, status: Int, code: String? = nil, param: String?, mention: String,
        file: StaticString = #filePath, line: UInt = #line
    ) async throws {
        let r = try await post(path, body)
        XCTAssertEqual(r.status, status, "\(body.prefix(120)): \(r.body)", file: file, line: line)
        let error = try XCTUnwrap(try object(r.body)["error"] as? [String: Any], r.body, file: file, line: line)
        XCTAssertEqual(error["type"] as? String, status == 404 || status == 400 ? "invalid_request_error" : nil, file: file, line: line)
        if let code { XCTAssertEqual(error["code"] as? String, code, r.body, file: file, line: line) }
        if let param {
            XCTAssertEqual(error["param"] as? String, param, r.body, file: file, line: line)
        } else {
            XCTAssertTrue(error["param"] is NSNull, r.body, file: file, line: line)
        }
        let message = try XCTUnwrap(error["message"] as? String, file: file, line: line)
        XCTAssertTrue(message.contains(mention), "'\(message)' does not mention \(mention)", file: file, line: line)
    }

    // MARK: /v1/completions

    func testGreedyCompletionIsTheGreedyGenerateText() async throws {
        let tgi = try await post("/generate", #"{"inputs":"\#(Self.prompt)","parameters":{"max_new_tokens":12,"details":true}}"#)
        XCTAssertEqual(tgi.status, 200, tgi.body)
        let tgiJSON = try object(tgi.body)
        let expected = try XCTUnwrap(tgiJSON["generated_text"] as? String)
        let generated = try XCTUnwrap((tgiJSON["details"] as? [String: Any])?["generated_tokens"] as? Int)

        let r = try await post("/v1/completions", #"{"model":"smollm2-135m-instruct","prompt":"\#(Self.prompt)","max_tokens":12,"temperature":0}"#)
        XCTAssertEqual(r.status, 200, r.body)
        XCTAssertEqual(r.headers.first(name: "content-type"), "application/json")
        let json = try object(r.body)
        XCTAssertEqual(json["object"] as? String, "text_completion")
        XCTAssertTrue((json["id"] as? String)?.hasPrefix("cmpl-") ?? false, r.body)
        XCTAssertEqual(json["model"] as? String, "smollm2-135m-instruct")
        let created = try XCTUnwrap(json["created"] as? Int)
        XCTAssertEqual(Double(created), Date().timeIntervalSince1970, accuracy: 300)
        let c = try choice(json)
        XCTAssertEqual(c["text"] as? String, expected)
        XCTAssertEqual(c["finish_reason"] as? String, "length")
        XCTAssertTrue(c["logprobs"] is NSNull)
        let usage = try XCTUnwrap(json["usage"] as? [String: Int])
        XCTAssertEqual(usage["prompt_tokens"], Int(tgi.headers.first(name: "x-prompt-tokens") ?? ""))
        XCTAssertEqual(usage["prompt_tokens"], 5)
        XCTAssertEqual(usage["completion_tokens"], generated)
        XCTAssertEqual(usage["total_tokens"], 5 + generated)

        // No `model`: the default model; a prompt list of one string is the same prompt.
        let defaults = try await post("/v1/completions", #"{"prompt":["\#(Self.prompt)"],"max_tokens":12,"temperature":0}"#)
        XCTAssertEqual(try choice(try object(defaults.body))["text"] as? String, expected, defaults.body)
        XCTAssertEqual(try object(defaults.body)["model"] as? String, "smollm2-135m-instruct")
    }

    func testDefaultsAreOpenAIs() async throws {
        // 16 tokens by default; temperature 1 samples, so a seed makes it reproducible.
        let body = #"{"prompt":"Once upon a time","seed":11}"#
        let a = try object(try await post("/v1/completions", body).body)
        XCTAssertEqual((a["usage"] as? [String: Int])?["completion_tokens"], 16)
        XCTAssertEqual(try choice(a)["finish_reason"] as? String, "length")
        let b = try object(try await post("/v1/completions", body).body)
        XCTAssertEqual(try choice(a)["text"] as? String, try choice(b)["text"] as? String)
        var texts = Set<String>()
        for seed in 12..<16 {
            texts.insert(try choice(try object(try await post("/v1/completions", #"{"prompt":"Once upon a time","seed":\#(seed)}"#).body))["text"] as? String ?? "")
        }
        XCTAssertGreaterThan(texts.count, 1, "different seeds at temperature 1 all gave the same text")
    }

    func testStreamedDeltasMakeTheSameText() async throws {
        let plain = try object(try await post("/v1/completions", #"{"prompt":"\#(Self.prompt)","max_tokens":10,"temperature":0}"#).body)
        let text = try XCTUnwrap(try choice(plain)["text"] as? String)

        let r = try await post(
            "/v1/completions", #"{"prompt":"\#(Self.prompt)","max_tokens":10,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}"#)
        XCTAssertEqual(r.status, 200, r.body)
        XCTAssertEqual(r.headers.first(name: "content-type"), "text/event-stream")
        let streamed = try chunks(r.body)
        XCTAssertGreaterThanOrEqual(streamed.count, 3, r.body)
        XCTAssertEqual(Set(streamed.compactMap { $0["id"] as? String }).count, 1, "one id for every chunk")
        XCTAssertTrue(streamed.allSatisfy { $0["object"] as? String == "text_completion" })
        // Text chunks, then the finish chunk, then usage with no choices.
        let usageChunk = try XCTUnwrap(streamed.last)
        XCTAssertEqual((usageChunk["choices"] as? [Any])?.count, 0)
        XCTAssertEqual(usageChunk["usage"] as? [String: Int], plain["usage"] as? [String: Int])
        let withChoices = streamed.dropLast()
        XCTAssertTrue(withChoices.allSatisfy { $0["usage"] is NSNull }, "chunks before the last carry usage: null")
        let finish = try choice(try XCTUnwrap(withChoices.last))
        XCTAssertEqual(finish["finish_reason"] as? String, "length")
        for chunk in withChoices.dropLast() { XCTAssertTrue(try choice(chunk)["finish_reason"] is NSNull) }
        let deltas = try withChoices.map { try XCTUnwrap(try choice($0)["text"] as? String) }
        XCTAssertEqual(deltas.joined(), text)

        // Without stream_options: no usage at all.
        let bare = try chunks(try await post("/v1/completions", #"{"prompt":"\#(Self.prompt)","max_tokens":10,"temperature":0,"stream":true}"#).body)
        XCTAssertTrue(bare.allSatisfy { $0["usage"] == nil })
        XCTAssertEqual(try bare.map { try choice($0)["text"] as? String ?? "" }.joined(), text)
    }

    func testStopSequencesAreCutOutAsOpenAIDoes() async throws {
        let greedy = try choice(try object(try await post("/v1/completions", #"{"prompt":"\#(Self.prompt)","max_tokens":16,"temperature":0}"#).body))
        let text = try XCTUnwrap(greedy["text"] as? String)
        // A stop string from the middle of the greedy text (it spans a token boundary).
        let stop = String(text.dropFirst(4).prefix(5))
        let found = try XCTUnwrap(text.range(of: stop))
        let before = String(text[..<found.lowerBound])
        let stopJSON = String(decoding: try JSONEncoder().encode([stop, "never appears"]), as: UTF8.self)
        let body = #"{"prompt":"\#(Self.prompt)","max_tokens":16,"temperature":0,"stop":\#(stopJSON)"#
        let r = try choice(try object(try await post("/v1/completions", body + "}").body))
        XCTAssertEqual(r["text"] as? String, before)
        XCTAssertEqual(r["finish_reason"] as? String, "stop")
        // Streamed: the same text (held-back prefixes of the stop are never sent).
        let streamed = try chunks(try await post("/v1/completions", body + #","stream":true}"#).body)
        XCTAssertEqual(try streamed.map { try choice($0)["text"] as? String ?? "" }.joined(), before)
        XCTAssertEqual(try choice(try XCTUnwrap(streamed.last))["finish_reason"] as? String, "stop")
    }

    func testByteModelIsChosenByName() async throws {
        guard SharedByteModel.installed else { throw XCTSkip("could not load Models/trained/\(SharedByteModel.id)") }
        let tgi = try object(try await post("/generate", #"{"model":"\#(SharedByteModel.id)","inputs":"The ","parameters":{"max_new_tokens":24}}"#).body)
        let expected = try XCTUnwrap(tgi["generated_text"] as? String)
        let r = try await post("/v1/completions", #"{"model":"\#(SharedByteModel.id)","prompt":"The ","max_tokens":24,"temperature":0}"#)
        XCTAssertEqual(r.status, 200, r.body)
        let json = try object(r.body)
        XCTAssertEqual(json["model"] as? String, SharedByteModel.id)
        XCTAssertEqual(try choice(json)["text"] as? String, expected)
        // One token per byte: "The " is 4 prompt tokens, and 24 generated.
        XCTAssertEqual(json["usage"] as? [String: Int], ["prompt_tokens": 4, "completion_tokens": 24, "total_tokens": 28])
        // The same prompt as token ids (the bytes of "The ").
        let ids = try object(try await post("/v1/completions", #"{"model":"\#(SharedByteModel.id)","prompt":[84,104,101,32],"max_tokens":24,"temperature":0}"#).body)
        XCTAssertEqual(try choice(ids)["text"] as? String, expected)
        // And SmolLM2 says something else.
        let smol = try object(try await post("/v1/completions", #"{"prompt":"The ","max_tokens":24,"temperature":0}"#).body)
        XCTAssertNotEqual(try choice(smol)["text"] as? String, expected)
    }

    // MARK: /v1/chat/completions

    func testChatAnswersWithTheTemplatedPrompt() async throws {
        let r = try await post("/v1/chat/completions", #"{"model":"smollm2-135m-instruct","messages":\#(Self.question),"max_tokens":40,"temperature":0}"#)
        XCTAssertEqual(r.status, 200, r.body)
        let json = try object(r.body)
        XCTAssertEqual(json["object"] as? String, "chat.completion")
        XCTAssertTrue((json["id"] as? String)?.hasPrefix("chatcmpl-") ?? false, r.body)
        let c = try choice(json)
        let message = try XCTUnwrap(c["message"] as? [String: Any])
        XCTAssertEqual(message["role"] as? String, "assistant")
        let content = try XCTUnwrap(message["content"] as? String)
        XCTAssertTrue(content.contains("Paris"), content)
        XCTAssertEqual(c["finish_reason"] as? String, "stop", "the answer ends at <|im_end|>: \(content)")
        XCTAssertFalse(content.contains("<|im_end|>"))

        // The same prompt written by hand from the template, through TGI's route: the same tokens.
        let rendered = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            + "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        let inputs = String(decoding: try JSONEncoder().encode(rendered), as: UTF8.self)
        let tgi = try await post("/generate", #"{"inputs":\#(inputs),"parameters":{"max_new_tokens":40,"details":true}}"#)
        XCTAssertEqual(try object(tgi.body)["generated_text"] as? String, content)
        let usage = try XCTUnwrap(json["usage"] as? [String: Int])
        XCTAssertEqual(usage["prompt_tokens"], Int(tgi.headers.first(name: "x-prompt-tokens") ?? ""))
        XCTAssertEqual(usage["completion_tokens"], Int(tgi.headers.first(name: "x-generated-tokens") ?? ""))

        // Content as a list of text parts, and max_completion_tokens: the same answer.
        let parts = try object(try await post(
            "/v1/chat/completions",
            #"{"messages":[{"role":"user","content":[{"type":"text","text":"What is the capital of France?"}]}],"max_completion_tokens":40,"temperature":0}"#).body)
        XCTAssertEqual((try choice(parts)["message"] as? [String: Any])?["content"] as? String, content)
    }

    func testChatStreamOpensWithTheRoleAndEndsWithDone() async throws {
        let plain = try object(try await post("/v1/chat/completions", #"{"messages":\#(Self.question),"max_tokens":40,"temperature":0}"#).body)
        let content = try XCTUnwrap((try choice(plain)["message"] as? [String: Any])?["content"] as? String)
        let r = try await post(
            "/v1/chat/completions",
            #"{"messages":\#(Self.question),"max_tokens":40,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}"#)
        XCTAssertEqual(r.status, 200, r.body)
        let streamed = try chunks(r.body)
        XCTAssertTrue(streamed.allSatisfy { $0["object"] as? String == "chat.completion.chunk" })
        XCTAssertEqual(Set(streamed.compactMap { $0["id"] as? String }).count, 1)
        XCTAssertTrue((streamed.first?["id"] as? String)?.hasPrefix("chatcmpl-") ?? false)
        let first = try choice(try XCTUnwrap(streamed.first))
        XCTAssertEqual(first["delta"] as? [String: String], ["role": "assistant", "content": ""])
        let usage = try XCTUnwrap(streamed.last)
        XCTAssertEqual((usage["choices"] as? [Any])?.count, 0)
        XCTAssertEqual(usage["usage"] as? [String: Int], plain["usage"] as? [String: Int])
        let finish = try choice(streamed[streamed.count - 2])
        XCTAssertEqual(finish["delta"] as? [String: String], [:])
        XCTAssertEqual(finish["finish_reason"] as? String, "stop")
        let middle = streamed.dropFirst().dropLast(2)
        XCTAssertFalse(middle.isEmpty)
        let deltas = try middle.map { chunk -> String in
            let c = try choice(chunk)
            XCTAssertTrue(c["finish_reason"] is NSNull)
            let delta = try XCTUnwrap(c["delta"] as? [String: String])
            XCTAssertNil(delta["role"])
            return try XCTUnwrap(delta["content"])
        }
        XCTAssertEqual(deltas.joined(), content)
    }

    func testChatNeedsAChatTemplate() async throws {
        guard SharedByteModel.installed else { throw XCTSkip("could not load Models/trained/\(SharedByteModel.id)") }
        try await assertOpenAIError(
            "/v1/chat/completions", #"{"model":"\#(SharedByteModel.id)","messages":\#(Self.question)}"#, status: 400, param: "model",
            mention: "chat template")
    }

    // MARK: errors

    func testUnknownModelIs404ModelNotFound() async throws {
        for path in ["/v1/completions", "/v1/chat/completions"] {
            let body = path == "/v1/completions" ? #"{"model":"gpt-4o","prompt":"Hi"}"# : #"{"model":"gpt-4o","messages":\#(Self.question)}"#
            try await assertOpenAIError(path, body, status: 404, code: "model_not_found", param: nil, mention: "gpt-4o")
        }
    }

    func testInvalidRequestsAre400NamingTheField() async throws {
        let long = String(repeating: "word ", count: 200)  // over the test server's 64 input tokens
        let completions: [(String, String?, String)] = [
            (#"{"prompt":"Hi","n":2}"#, "n", "`n`"),
            (#"{"prompt":"Hi","best_of":3}"#, "best_of", "best_of"),
            (#"{"prompt":"Hi","temperature":2.5}"#, "temperature", "temperature"),
            (#"{"prompt":"Hi","temperature":-0.1}"#, "temperature", "temperature"),
            (#"{"prompt":"Hi","top_p":0}"#, "top_p", "top_p"),
            (#"{"prompt":"Hi","max_tokens":0}"#, "max_tokens", "max_tokens"),
            (#"{"prompt":"Hi","max_tokens":"ten"}"#, "max_tokens", "max_tokens"),
            (#"{"prompt":"Hi","max_tokens":9000}"#, "prompt", "maximum context length is 8192"),
            (#"{"prompt":"\#(long)"}"#, "prompt", "at most 64"),
            (#"{"prompt":"Hi","stop":["a","b","c","d","e"]}"#, "stop", "stop"),
            (#"{"prompt":"Hi","stop":[""]}"#, "stop", "stop"),
            (#"{"prompt":"Hi","stream_options":{"include_usage":true}}"#, "stream_options", "stream"),
            (#"{"prompt":"Hi","stream":true,"stream_options":{"include_usages":true}}"#, "stream_options.include_usages", "include_usages"),
            (#"{"prompt":"Hi","presence_penalty":0.5}"#, "presence_penalty", "presence_penalty"),
            (#"{"prompt":"Hi","frequency_penalty":1}"#, "frequency_penalty", "frequency_penalty"),
            (#"{"prompt":"Hi","logit_bias":{"50256":-100}}"#, "logit_bias", "logit_bias"),
            (#"{"prompt":"Hi","logprobs":2}"#, "logprobs", "logprobs"),
            (#"{"prompt":"Hi","echo":true}"#, "echo", "echo"),
            (#"{"prompt":"Hi","suffix":"end"}"#, "suffix", "suffix"),
            (#"{"prompt":["a","b"]}"#, "prompt", "one per request"),
            (#"{"prompt":[99999999]}"#, "prompt", "vocabulary"),
            (#"{"prompt":[1.5]}"#, "prompt", "token ids"),
            (#"{"prompt":""}"#, "prompt", "no tokens"),
            (#"{"prompt":[]}"#, "prompt", "empty"),
            (#"{"max_tokens":5}"#, "prompt", "required"),
            (#"{"prompt":"Hi","temprature":0.5}"#, "temprature", "unknown field"),
        ]
        for (body, param, mention) in completions {
            try await assertOpenAIError("/v1/completions", body, status: 400, param: param, mention: mention)
        }
        let chats: [(String, String?, String)] = [
            (#"{"messages":\#(Self.question),"n":2}"#, "n", "`n`"),
            (#"{"messages":[]}"#, "messages", "empty"),
            (#"{"messages":"Hi"}"#, "messages", "list"),
            (#"{"messages":[{"role":"tool","content":"42"}]}"#, "messages[0].role", "tool"),
            (#"{"messages":[{"role":"robot","content":"Hi"}]}"#, "messages[0].role", "robot"),
            (#"{"messages":[{"role":"user"}]}"#, "messages[0].content", "required"),
            (#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#, "messages[0].content[0].type", "image_url"),
            (#"{"messages":[{"role":"user","content":"Hi","colour":1}]}"#, "messages[0].colour", "unknown field"),
            (#"{"messages":\#(Self.question),"logprobs":true}"#, "logprobs", "logprobs"),
            (#"{"messages":\#(Self.question),"tools":[{"type":"function","function":{"name":"f"}}]}"#, "tools", "tool"),
            (#"{"messages":\#(Self.question),"response_format":{"type":"json_object"}}"#, "response_format", "response_format"),
            (#"{"messages":\#(Self.question),"max_completion_tokens":9000}"#, "messages", "maximum context length"),
            (#"{"messages":\#(Self.question),"echo":true}"#, "echo", "unknown field"),
        ]
        for (body, param, mention) in chats {
            try await assertOpenAIError("/v1/chat/completions", body, status: 400, param: param, mention: mention)
        }
        // Malformed JSON.
        for path in ["/v1/completions", "/v1/chat/completions"] {
            try await assertOpenAIError(path, #"{"prompt":"Hi""#, status: 400, param: nil, mention: "JSON")
        }
        // Neutral values of fields Apus does not implement are accepted.
        let neutral = try await post(
            "/v1/completions",
            #"{"prompt":"Hi","max_tokens":1,"n":1,"best_of":1,"echo":false,"logprobs":null,"presence_penalty":0,"frequency_penalty":0,"logit_bias":{},"suffix":null,"user":"u","stream":false}"#)
        XCTAssertEqual(neutral.status, 200, neutral.body)
        let neutralChat = try await post(
            "/v1/chat/completions",
            #"{"messages":[{"role":"developer","content":"Be brief."},{"role":"user","content":"Hi","name":"ann"}],"max_tokens":1,"n":1,"logprobs":false,"top_logprobs":0,"tools":[],"tool_choice":"none","response_format":{"type":"text"},"store":false,"parallel_tool_calls":true,"presence_penalty":0,"frequency_penalty":0,"seed":3,"top_p":0.9,"user":"u"}"#)
        XCTAssertEqual(neutralChat.status, 200, neutralChat.body)
    }

    func testDisconnectMidStreamReleasesTheSequence() async throws {
        try await assertDisconnectMidStreamReleasesTheSequence(
            "/v1/completions", #"{"prompt":"Write a very long story.","max_tokens":4000,"stream":true}"#)
        try await assertDisconnectMidStreamReleasesTheSequence(
            "/v1/chat/completions", #"{"messages":[{"role":"user","content":"Write a very long story."}],"stream":true}"#)
    }
}
