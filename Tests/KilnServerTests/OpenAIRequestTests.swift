import XCTest
import Foundation
import KilnCore
import KilnTemplates
@testable import KilnServer

/// Request parsing and validation for the OpenAI endpoints: each malformed field is a 400 naming it, unsupported known
/// fields are refused by name, unknown fields are ignored, and defaults are OpenAI's.
final class OpenAIRequestTests: XCTestCase {
    private func parse(_ text: String, _ kind: EndpointKind = .chat) throws -> OpenAIRequest {
        try OpenAIRequest.parse(try JSON.parse(Data(text.utf8)), kind: kind, randomSeed: 7)
    }

    /// The error a body gets (fails the test when it parses).
    private func error(_ text: String, _ kind: EndpointKind = .chat, file: StaticString = #filePath, line: UInt = #line) -> APIError? {
        do {
            _ = try parse(text, kind)
            XCTFail("accepted: \(text)", file: file, line: line)
            return nil
        } catch let e as APIError {
            return e
        } catch let e as JSONParseError {
            return APIError.invalid(e.message)
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
            return nil
        }
    }

    func testAChatRequestWithEveryFieldParses() throws {
        let r = try parse("""
            {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
              {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
              {"role": "assistant", "content": "Hello"}, {"role": "developer", "content": "x"}],
             "max_completion_tokens": 12, "temperature": 0.5, "top_p": 0.9, "top_k": 20, "min_p": 0.1, "seed": -1,
             "stop": ["\\n\\n", "END"], "stream": true, "stream_options": {"include_usage": true}, "logprobs": true,
             "top_logprobs": 3, "n": 1, "presence_penalty": 0.5, "frequency_penalty": -0.5, "user": "u1", "store": false}
            """)
        XCTAssertEqual(r.prompt, .chat([ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi there"),
                                        ChatMessage(role: "assistant", content: "Hello"), ChatMessage(role: "system", content: "x")]))
        XCTAssertEqual(r.model, "m")
        XCTAssertEqual(r.maxTokens, 12)
        XCTAssertEqual(r.sampling.temperature, 0.5); XCTAssertEqual(r.sampling.topP, 0.9); XCTAssertEqual(r.sampling.topK, 20)
        XCTAssertEqual(r.sampling.minP, 0.1); XCTAssertEqual(r.sampling.presencePenalty, 0.5); XCTAssertEqual(r.sampling.frequencyPenalty, -0.5)
        XCTAssertEqual(r.sampling.seed, UInt64.max, "seed -1 is its 64-bit pattern")
        XCTAssertEqual(r.stops, ["\n\n", "END"])
        XCTAssertTrue(r.stream); XCTAssertTrue(r.includeUsage)
        XCTAssertEqual(r.logprobs, 3)
        XCTAssertEqual(Set(r.unknownFields), ["user", "store"], "unknown fields are ignored, and reported for the log")
    }

    func testDefaultsAreOpenAIs() throws {
        let r = try parse(#"{"prompt": "Once", "stop": "."}"#, .completion)
        XCTAssertEqual(r.prompt, .text("Once"))
        XCTAssertNil(r.maxTokens)
        XCTAssertEqual(r.sampling.temperature, 1); XCTAssertEqual(r.sampling.topP, 1); XCTAssertEqual(r.sampling.topK, 0)
        XCTAssertEqual(r.sampling.minP, 0); XCTAssertEqual(r.sampling.repeatPenalty, 1)
        XCTAssertEqual(r.sampling.seed, 7, "no seed: the random one")
        XCTAssertEqual(r.stops, ["."])
        XCTAssertFalse(r.stream); XCTAssertNil(r.logprobs)
        XCTAssertFalse(r.ignoreEOS)
        XCTAssertTrue(try parse(#"{"prompt": "x", "ignore_eos": true}"#, .completion).ignoreEOS, "vLLM's ignore_eos is known")
        XCTAssertEqual(try parse(#"{"prompt": [1, 2, 3], "logprobs": 0}"#, .completion).prompt, .tokens([1, 2, 3]))
        XCTAssertEqual(try parse(#"{"prompt": ["one"], "logprobs": 0}"#, .completion).logprobs, 0)
        XCTAssertEqual(try parse(#"{"messages": [{"role": "user", "content": "x"}], "temperature": null, "tools": null}"#).sampling.temperature, 1,
                       "null is absent")
    }

    func testMalformedFieldsAre400sNamingTheField() {
        let cases: [(String, EndpointKind, String?)] = [
            (#"{"messages": []}"#, .chat, "messages"),
            (#"{"max_tokens": 5}"#, .chat, "messages"),
            (#"{"messages": "hi"}"#, .chat, "messages"),
            (#"{"messages": [{"role": "wizard", "content": "x"}]}"#, .chat, "messages[0].role"),
            (#"{"messages": [{"role": "user"}]}"#, .chat, "messages[0].content"),
            (#"{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}"#, .chat, "messages[0].content[0]"),
            (#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}"#, .chat, "max_tokens"),
            (#"{"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 0}"#, .chat, "max_completion_tokens"),
            (#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": "10"}"#, .chat, "max_tokens"),
            (#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1.5}"#, .chat, "max_tokens"),
            (#"{"messages": [{"role": "user", "content": "x"}], "temperature": -1}"#, .chat, "temperature"),
            (#"{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}"#, .chat, "temperature"),
            (#"{"messages": [{"role": "user", "content": "x"}], "top_p": 0}"#, .chat, "top_p"),
            (#"{"messages": [{"role": "user", "content": "x"}], "top_k": -2}"#, .chat, "top_k"),
            (#"{"messages": [{"role": "user", "content": "x"}], "presence_penalty": 3}"#, .chat, "presence_penalty"),
            (#"{"messages": [{"role": "user", "content": "x"}], "stop": 5}"#, .chat, "stop"),
            (#"{"messages": [{"role": "user", "content": "x"}], "stop": ["a", 1]}"#, .chat, "stop"),
            (#"{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}"#, .chat, "stream"),
            (#"{"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": true}}"#, .chat, "stream_options"),
            (#"{"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21}"#, .chat, "top_logprobs"),
            (#"{"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}"#, .chat, "top_logprobs"),
            (#"{"prompt": "x", "logprobs": 30}"#, .completion, "logprobs"),
            (#"{"prompt": ""}"#, .completion, "prompt"),
            (#"{"prompt": {"text": "x"}}"#, .completion, "prompt"),
            (#"{"prompt": ["a", "b"]}"#, .completion, "prompt"),
            (#"[1, 2]"#, .chat, nil),
        ]
        for (body, kind, param) in cases {
            guard let e = error(body, kind) else { continue }
            XCTAssertEqual(e.status, 400, body)
            XCTAssertEqual(e.type, "invalid_request_error", body)
            XCTAssertEqual(e.param, param, body)
            if let param { XCTAssertTrue(e.message.contains(param), "\(body): the message should name \(param): \(e.message)") }
        }
    }

    func testKnownUnsupportedFieldsAreRefusedByName() {
        let chat = #"{"messages": [{"role": "user", "content": "x"}], "#
        for (extra, param) in [(#""tools": [{"type": "function"}]}"#, "tools"), (#""n": 2}"#, "n"), (#""logit_bias": {"50": 1}}"#, "logit_bias"),
                               (#""response_format": {"type": "json_object"}}"#, "response_format"), (#""tool_choice": "auto"}"#, "tool_choice")] {
            guard let e = error(chat + extra) else { continue }
            XCTAssertEqual(e.status, 400)
            XCTAssertEqual(e.param, param)
            XCTAssertEqual(e.code, "unsupported_parameter")
            XCTAssertTrue(e.message.contains("'\(param)'"), e.message)
        }
        XCTAssertEqual(error(#"{"prompt": "x", "echo": true}"#, .completion)?.param, "echo")
        XCTAssertEqual(error(#"{"prompt": "x", "best_of": 3}"#, .completion)?.param, "best_of")
        // Values that ask for nothing Kiln lacks are accepted.
        XCTAssertNoThrow(try parse(chat + #""n": 1, "logit_bias": {}, "response_format": {"type": "text"}, "tool_choice": "none"}"#))
    }

    func testBadJSONIsAParseError() {
        XCTAssertThrowsError(try JSON.parse(Data("{\"messages\": [".utf8))) { XCTAssertTrue($0 is JSONParseError) }
        XCTAssertThrowsError(try JSON.parse(Data("not json".utf8))) { XCTAssertTrue($0 is JSONParseError) }
    }

    /// The error body is OpenAI's shape, with nulls where a part is absent; 429 carries Retry-After.
    func testErrorBodiesAreOpenAIsShape() throws {
        let e = APIError.invalid("bad \"x\"\n", param: "x")
        XCTAssertEqual(e.body.serialized, #"{"error":{"message":"bad \"x\"\n","type":"invalid_request_error","param":"x","code":null}}"#)
        let busy = APIError.queueFull(limit: 3)
        XCTAssertEqual(busy.status, 429); XCTAssertEqual(busy.retryAfter, 1)
        XCTAssertEqual(APIError.unauthorized.status, 401)
        XCTAssertEqual(APIError.modelNotFound("gpt-4", served: "smol").status, 404)
        XCTAssertEqual(APIError.bodyTooLarge(limit: 10).status, 413)
        let back = try JSON.parse(Data(busy.body.serialized.utf8))
        XCTAssertEqual(back["error"]?["code"], .string("rate_limit_exceeded"))
        XCTAssertEqual(back["error"]?["param"], .null)
    }

    func testJSONRoundTripsAndEscapes() throws {
        let v: JSON = .object([("a", .array([.int(-3), .double(0.5), .double(2.25), .bool(true), .null])), ("s", .string("é\u{1}\t"))])
        XCTAssertEqual(v.serialized, #"{"a":[-3,0.5,2.25,true,null],"s":"é\u0001\t"}"#)
        XCTAssertEqual(JSON.double(2).serialized, "2.0", "a whole double stays a JSON float")
        XCTAssertEqual(try JSON.parse(Data(v.serialized.utf8)), v)
        XCTAssertEqual(try JSON.parse(Data("[1, 1.5, false]".utf8)), .array([.int(1), .double(1.5), .bool(false)]))
    }
}
