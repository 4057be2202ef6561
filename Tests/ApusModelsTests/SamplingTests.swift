import ApusModels
import Foundation
import XCTest

final class SamplingTests: XCTestCase {
    func draw(_ logits: [Float], _ parameters: SamplingParameters, count: Int, history: [Int32] = []) -> [Int32: Int] {
        var sampler = Sampler(parameters: parameters)
        var counts: [Int32: Int] = [:]
        for _ in 0..<count {
            var row = logits
            let token = row.withUnsafeMutableBufferPointer { sampler.sample(logits: $0, history: history) }
            counts[token.id, default: 0] += 1
        }
        return counts
    }

    func testGreedyTakesTheLargestLogitAndItsLogprob() {
        var logits: [Float] = [0.5, 2.0, 1.0]
        var sampler = Sampler(parameters: SamplingParameters())
        let token = logits.withUnsafeMutableBufferPointer { sampler.sample(logits: $0, history: []) }
        XCTAssertEqual(token.id, 1)
        let expected = 2.0 - log(exp(0.5) + exp(2.0) + exp(1.0))
        XCTAssertEqual(Double(token.logprob), expected, accuracy: 1e-6)
    }

    func testSamplingFollowsTheSoftmax() {
        // p = softmax([0, ln 2, ln 3]) = [1/6, 2/6, 3/6]
        let logits: [Float] = [0, Float(log(2.0)), Float(log(3.0))]
        let n = 60_000
        let counts = draw(logits, SamplingParameters(doSample: true, seed: 1), count: n)
        for (id, p) in [(Int32(0), 1.0 / 6), (1, 2.0 / 6), (2, 3.0 / 6)] {
            let observed = Double(counts[id, default: 0]) / Double(n)
            XCTAssertEqual(observed, p, accuracy: 0.01, "token \(id)")
        }
    }

    func testTemperatureSharpens() {
        let logits: [Float] = [0, 1]
        let cold = draw(logits, SamplingParameters(temperature: 0.25, seed: 2), count: 20_000)
        // softmax([0, 4]) puts 0.982 on token 1.
        XCTAssertEqual(Double(cold[1, default: 0]) / 20_000, 1 / (1 + exp(-4.0)), accuracy: 0.01)
    }

    func testTopKAndTopPAndTypicalRestrictTheCandidates() {
        let logits: [Float] = [3, 2.9, 1, 0.5, 0.1, -1]
        XCTAssertEqual(Set(draw(logits, SamplingParameters(topK: 2, seed: 3), count: 2000).keys), [0, 1])
        // softmax: 0.41, 0.37, 0.06, ...: top_p 0.7 keeps the first two.
        XCTAssertEqual(Set(draw(logits, SamplingParameters(topP: 0.7, seed: 4), count: 2000).keys), [0, 1])
        XCTAssertEqual(Set(draw(logits, SamplingParameters(topK: 1, seed: 5), count: 200).keys), [0])
        let typical = Set(draw(logits, SamplingParameters(typicalP: 0.5, seed: 6), count: 2000).keys)
        XCTAssertTrue(typical.isSubset(of: [0, 1, 2]) && !typical.isEmpty)
    }

    func testRepetitionPenaltyFollowsHuggingFace() {
        var logits: [Float] = [2, -2, 1]
        logits.withUnsafeMutableBufferPointer { Sampler.applyRepetitionPenalty(2, history: [0, 1, 0], to: $0) }
        XCTAssertEqual(logits, [1, -4, 1])
    }

    func testSameSeedSameTokensDifferentSeedDifferentTokens() {
        let logits: [Float] = (0..<100).map { Float($0 % 7) * 0.3 }
        func sequence(_ seed: UInt64) -> [Int32] {
            var sampler = Sampler(parameters: SamplingParameters(doSample: true, seed: seed))
            return (0..<50).map { _ in
                var row = logits
                return row.withUnsafeMutableBufferPointer { sampler.sample(logits: $0, history: []) }.id
            }
        }
        XCTAssertEqual(sequence(42), sequence(42))
        XCTAssertNotEqual(sequence(42), sequence(43))
    }

    func testStopSequencesAcrossTokenBoundaries() {
        let matcher = StopSequenceMatcher(["\n\n", "END"])
        XCTAssertNil(matcher.match(in: "Hello E", newBytes: 2))
        XCTAssertNil(matcher.match(in: "Hello EN", newBytes: 1))
        XCTAssertEqual(matcher.match(in: "Hello END", newBytes: 1)?.stop, "END")
        XCTAssertEqual(matcher.match(in: "a\n", newBytes: 2)?.stop, nil)
        XCTAssertEqual(matcher.match(in: "a\n\nb", newBytes: 2)?.stop, "\n\n")
        XCTAssertNil(StopSequenceMatcher([]).match(in: "anything", newBytes: 8))
    }

    /// What a streaming client sees: a stop string and what follows are never sent, a held-back
    /// possible start is sent once it turns out not to be one, and the pieces always add up to
    /// the text before the first stop.
    func testStopSequenceTrimmerHoldsBackPossibleStarts() {
        var t = StopSequenceTrimmer(["END", "\n\n"])
        XCTAssertEqual(t.append("Hello E"), "Hello ")  // "E" may start END
        XCTAssertEqual(t.append("N"), "")  // "EN" still may
        XCTAssertEqual(t.append("D!"), "")  // END: cut, with everything after it
        XCTAssertTrue(t.stopped)
        XCTAssertEqual(t.append("more"), "")
        XCTAssertEqual(t.finish(), "")

        var u = StopSequenceTrimmer(["END", "\n\n"])
        XCTAssertEqual(u.append("a\n"), "a")
        XCTAssertEqual(u.append("b EN"), "\nb ")  // the newline was not a stop after all
        XCTAssertEqual(u.append("ough"), "ENough")
        XCTAssertEqual(u.append("x\n"), "x")
        XCTAssertEqual(u.finish(), "\n")  // the end: what was held back is text
        XCTAssertFalse(u.stopped)

        // The earliest stop wins, wherever the longer one started; multi-byte text is cut between characters.
        var v = StopSequenceTrimmer(["bcd", "é!"])
        XCTAssertEqual(v.append("aébc"), "aé")  // "bc" may start "bcd"
        XCTAssertEqual(v.append("d"), "")
        var w = StopSequenceTrimmer(["bcd", "é!"])
        XCTAssertEqual(w.append("xé"), "x")
        XCTAssertEqual(w.append("!bcd"), "")
        XCTAssertTrue(w.stopped)

        // No stops: everything passes at once.
        var none = StopSequenceTrimmer([])
        XCTAssertEqual(none.append("abc"), "abc")
        XCTAssertEqual(none.finish(), "")

        // Every split of a text gives the same concatenation as trimming it whole.
        let text = "one ENtwo \nthree END four"
        for cut in 0...text.count {
            var s = StopSequenceTrimmer(["END", "\n\n"])
            let out = s.append(String(text.prefix(cut))) + s.append(String(text.dropFirst(cut))) + s.finish()
            XCTAssertEqual(out, "one ENtwo \nthree ", "split at \(cut)")
        }
    }
}
