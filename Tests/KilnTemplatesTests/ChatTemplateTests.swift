import Foundation
import XCTest
import KilnCore
import KilnTemplates

final class ChatTemplateTests: XCTestCase {
    func testReferenceTemplatesAreExactCopies() {
        for (source, length) in ReferenceTemplates.expectedLengths {
            XCTAssertEqual(source.unicodeScalars.count, length)
        }
    }

    /// SmolLM2's real template adds a default system turn when the chat has none. The golden
    /// prompt in smollm2-llamacpp.json (`chat_no_system.rendered_prompt`) has no system turn because
    /// llama.cpp recognised the template as ChatML and used its built-in formatter instead of
    /// running it, so the jinja2 rendering is that default system turn followed by the golden prompt.
    func testSmolLM2AgainstLlamaCppGolden() throws {
        let template = try ChatTemplate(source: ReferenceTemplates.smolLM2, name: "SmolLM2")
        let prompt = try template.render(messages: [ChatMessage(role: "user", content: "What is the tallest mountain in the world?")],
                                         addGenerationPrompt: true, bosToken: "<|im_start|>", eosToken: "<|im_end|>")
        let golden = "<|im_start|>user\nWhat is the tallest mountain in the world?<|im_end|>\n<|im_start|>assistant\n"
        let defaultSystem = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        XCTAssertEqual(prompt, defaultSystem + golden)
        // With an explicit system turn the template adds nothing of its own.
        let withSystem = try template.render(messages: [ChatMessage(role: "system", content: "S"), ChatMessage(role: "user", content: "U")],
                                             addGenerationPrompt: false, bosToken: "", eosToken: "")
        XCTAssertEqual(withSystem, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n")
    }

    func testExtraVariablesReachTheTemplate() throws {
        let template = try ChatTemplate(source: ReferenceTemplates.llama31, name: "llama31")
        let prompt = try template.render(messages: [ChatMessage(role: "user", content: "Hi")], addGenerationPrompt: false,
                                         bosToken: "<B>", eosToken: "<E>", extra: ["date_string": "01 Jan 2030"])
        XCTAssertEqual(prompt, "<B><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 01 Jan 2030\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>")
    }

    func testJSONContextKeepsKeyOrderAndNumberKinds() throws {
        let value = try JinjaValue(json: #"{"z": 1, "a": 1.0, "m": [true, null, "\u00e9\ud83d\ude00"]}"#)
        XCTAssertEqual(value.pythonString, "{'z': 1, 'a': 1.0, 'm': [True, None, 'é😀']}")
        XCTAssertThrowsError(try JinjaValue(json: "{\"a\": }"))
    }

    // MARK: - Errors: one line, naming the template, the place and the problem

    func testUnknownTag() {
        let message = kilnErrorMessage { try ChatTemplate(source: "ok\n{% frobnicate x %}", name: "bad-tag") }
        XCTAssertEqual(message, "chat template 'bad-tag' line 2, column 1: unknown tag 'frobnicate'")
    }

    func testUnclosedBlock() {
        let message = kilnErrorMessage { try ChatTemplate(source: "{% for m in messages %}{% if true %}x{% endif %}", name: "unclosed") }
        XCTAssertEqual(message, "chat template 'unclosed' line 1, column 1: unclosed 'for' block: reached the end of the template looking for 'else' or 'endfor'")
        let mismatched = kilnErrorMessage { try ChatTemplate(source: "{% if x %}\n{% endfor %}", name: "mismatch") }
        XCTAssertEqual(mismatched, "chat template 'mismatch' line 2, column 1: unexpected 'endfor' tag (expected 'elif' or 'else' or 'endif')")
        let unclosedTag = kilnErrorMessage { try ChatTemplate(source: "{{ 'a' ", name: "tag") }
        XCTAssertEqual(unclosedTag, "chat template 'tag' line 1, column 1: unclosed tag: missing '}}'")
    }

    func testUnknownFilterAndTestFailAtLoad() {
        let filter = kilnErrorMessage { try ChatTemplate(source: "{{ x }}\n  {{ x | frob(1) }}", name: "f") }
        XCTAssertEqual(filter, "chat template 'f' line 2, column 10: unknown filter 'frob'")
        let test = kilnErrorMessage { try ChatTemplate(source: "{% if x is frob %}{% endif %}", name: "t") }
        XCTAssertEqual(test, "chat template 't' line 1, column 12: unknown test 'frob'")
    }

    func testSyntaxErrors() {
        XCTAssertEqual(kilnErrorMessage { try ChatTemplate(source: "{{ 1 + }}", name: "s") },
                       "chat template 's' line 1, column 8: expected an expression (found end of tag)")
        XCTAssertEqual(kilnErrorMessage { try ChatTemplate(source: "{{ (1 + }}", name: "s") },
                       "chat template 's' line 1, column 1: unclosed tag: missing '}}'")
        XCTAssertEqual(kilnErrorMessage { try ChatTemplate(source: "{{ 'abc }}", name: "s") },
                       "chat template 's' line 1, column 4: unterminated string literal")
        XCTAssertEqual(kilnErrorMessage { try ChatTemplate(source: "{{ 1 2 }}", name: "s") },
                       "chat template 's' line 1, column 6: unexpected number 2 at the end of the tag")
    }

    func testRaiseExceptionCarriesTheTemplateMessage() throws {
        let template = try ChatTemplate(source: ReferenceTemplates.llama31, name: "Llama-3.1")
        let context = #"{"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "a", "arguments": {}}}, {"function": {"name": "b", "arguments": {}}}]}], "bos_token": "", "add_generation_prompt": false}"#
        guard case .dict(let d) = try JinjaValue(json: context) else { return XCTFail() }
        let message = kilnErrorMessage { try template.render(context: Dictionary(uniqueKeysWithValues: d.entries.map { ($0.key, $0.value) })) }
        XCTAssertTrue(message.hasPrefix("chat template 'Llama-3.1' line 71, column 32: "), message)
        XCTAssertTrue(message.hasSuffix(": raise_exception: This model only supports single tool-calls at once!"), message)
    }

    func testRuntimeErrors() {
        XCTAssertEqual(kilnErrorMessage { try renderReference("{{ 'a' + 1 }}", name: "r", json: "{}") },
                       "chat template 'r' line 1, column 8: unsupported operand types for +: 'str' and 'int'")
        XCTAssertEqual(kilnErrorMessage { try renderReference("\n{{ nothing.here }}", name: "r", json: "{}") },
                       "chat template 'r' line 2, column 4: 'nothing' is undefined (reading '.here')")
        XCTAssertEqual(kilnErrorMessage { try renderReference("{% for x in 3 %}{% endfor %}", name: "r", json: "{}") },
                       "chat template 'r' line 1, column 13: 'int' object is not iterable")
        XCTAssertEqual(kilnErrorMessage { try renderReference("{{ 1 // 0 }}", name: "r", json: "{}") },
                       "chat template 'r' line 1, column 6: integer division or modulo by zero")
    }

    func testDeepRecursionIsStopped() {
        let source = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"
        let message = kilnErrorMessage { try renderReference(source, name: "recursive", json: "{}") }
        XCTAssertTrue(message.hasPrefix("chat template 'recursive' line 1, column "), message)
        XCTAssertTrue(message.hasSuffix("macro calls nested more than 64 deep (runaway recursion in 'f'?)"), message)
        // Deeply nested syntax is rejected at load instead of overflowing the stack.
        let nested = String(repeating: "(", count: 5000) + "1" + String(repeating: ")", count: 5000)
        XCTAssertTrue(kilnErrorMessage { try ChatTemplate(source: "{{ \(nested) }}", name: "nested") }.contains("nested more than"))
        let blocks = String(repeating: "{% if true %}", count: 5000)
        XCTAssertTrue(kilnErrorMessage { try ChatTemplate(source: blocks, name: "blocks") }.contains("blocks nested more than"))
    }

    func testHugeOutputAndLongLoopsAreStopped() throws {
        var template = try ChatTemplate(source: "{% for i in range(1000) %}{% for j in range(1000) %}{{ 'x' * 100 }}{% endfor %}{% endfor %}", name: "big")
        template.limits.maxOutputBytes = 1 << 20
        XCTAssertTrue(kilnErrorMessage { try template.render(context: [:]) }.hasSuffix("output exceeds 1048576 bytes"))
        var spin = try ChatTemplate(source: "{% for i in range(1000000) %}{% for j in range(1000000) %}{% endfor %}{% endfor %}", name: "spin")
        spin.limits.maxSteps = 20_000
        XCTAssertTrue(kilnErrorMessage { try spin.render(context: [:]) }.contains("loop iterations and calls; giving up"))
        XCTAssertTrue(kilnErrorMessage { try renderReference("{{ range(100000000) | length }}", name: "r", json: "{}") }.contains("too large"))
        XCTAssertTrue(kilnErrorMessage { try renderReference("{{ 'ab' * 100000000 }}", name: "r", json: "{}") }.contains("too large"))
    }
}
