import CNGHTTP2
import COpenBLAS
import COpenSSL
import XCTest

/// One real call into each system library, so a missing Debian package fails here, loudly, rather
/// than deep inside a later feature.
final class SystemLibrariesTests: XCTestCase {
    func testOpenBLASMultipliesTwoByTwo() {
        // [1 2; 3 4] x [5 6; 7 8] = [19 22; 43 50]
        let a: [Float] = [1, 2, 3, 4]
        let b: [Float] = [5, 6, 7, 8]
        var c = [Float](repeating: 0, count: 4)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 2, 2, 2, 1, a, 2, b, 2, 0, &c, 2)
        XCTAssertEqual(c, [19, 22, 43, 50])
    }

    func testNGHTTP2ReportsItsVersion() throws {
        let info = try XCTUnwrap(nghttp2_version(0))
        let version = String(cString: info.pointee.version_str)
        XCTAssertTrue(version.hasPrefix("1."), "nghttp2 \(version)")
        XCTAssertGreaterThanOrEqual(info.pointee.version_num, 0x013400)  // Debian 12 ships 1.52
    }

    func testOpenSSLReportsVersion3() {
        let version = String(cString: OpenSSL_version(Int32(OPENSSL_VERSION)))
        XCTAssertTrue(version.hasPrefix("OpenSSL 3."), version)
        XCTAssertEqual(COpenSSL_OPENSSL_VERSION_MAJOR(), 3)
        // A shim for a function-like macro works on a real context.
        let ctx = SSL_CTX_new(TLS_server_method())
        XCTAssertNotNil(ctx)
        XCTAssertEqual(COpenSSL_SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION), 1)
        SSL_CTX_free(ctx)
    }
}
