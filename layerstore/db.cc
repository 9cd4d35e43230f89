// SQLite in WAL mode: atomic transactions that survive kill -9, and readers that never block writers.
#include "db.h"

#include <sqlite3.h>
#include <sys/statvfs.h>

#include <cstdint>

#include "error.h"

namespace lamina::store {

namespace {

// SQLite's reason, said plainly when the store's filesystem is full: SQLite reports a full disk
// as "database or disk is full", or as a disk I/O error when it cannot grow its shared memory
// file.
std::string reason(sqlite3* db, const std::string& path) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    int code = db ? sqlite3_errcode(db) : SQLITE_NOMEM;
    if (code != SQLITE_FULL && code != SQLITE_IOERR) return msg;
    std::string dir = path.substr(0, path.rfind('/') + 1);
    struct statvfs v;
    if (::statvfs(dir.empty() ? "." : dir.c_str(), &v) != 0 ||
        static_cast<uint64_t>(v.f_bavail) * v.f_frsize >= (64u << 10))
        return msg;
    return "the store's filesystem is full (" + msg + "): free some space on it";
}

}  // namespace

Db::Db(const std::string& path) : path_(path) {
    if (sqlite3_open_v2(path.c_str(), &db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        nullptr) != SQLITE_OK) {
        std::string msg = reason(db_, path);
        sqlite3_close(db_);
        db_ = nullptr;
        throw StoreError("cannot open store database " + path + ": " + msg);
    }
    sqlite3_busy_timeout(db_, 60000);
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=FULL");
    exec("PRAGMA foreign_keys=ON");
}

Db::~Db() {
    sqlite3_close(db_);
}

void Db::fail(const std::string& what) {
    throw StoreError("store database " + path_ + ": " + what + ": " + reason(db_, path_));
}

void Db::exec(std::string_view sql) {
    std::string s(sql);
    char* err = nullptr;
    if (sqlite3_exec(db_, s.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
        std::string msg = err ? err : "unknown error";
        sqlite3_free(err);
        if (msg == sqlite3_errmsg(db_)) msg = reason(db_, path_);
        throw StoreError("store database " + path_ + ": " + msg);
    }
}

Stmt::Stmt(Db& db, std::string_view sql) : db_(db) {
    if (sqlite3_prepare_v2(db.handle(), sql.data(), static_cast<int>(sql.size()), &stmt_,
                           nullptr) != SQLITE_OK)
        db.fail("cannot prepare \"" + std::string(sql) + "\"");
}

Stmt::~Stmt() {
    sqlite3_finalize(stmt_);
}

Stmt& Stmt::bind(int idx, std::string_view v) {
    sqlite3_bind_text(stmt_, idx, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
}

Stmt& Stmt::bind(int idx, int64_t v) {
    sqlite3_bind_int64(stmt_, idx, v);
    return *this;
}

Stmt& Stmt::bind_null(int idx) {
    sqlite3_bind_null(stmt_, idx);
    return *this;
}

bool Stmt::step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    db_.fail("query failed");
}

void Stmt::run() {
    while (step()) {
    }
}

std::string Stmt::text(int col) const {
    const unsigned char* t = sqlite3_column_text(stmt_, col);
    return t ? std::string(reinterpret_cast<const char*>(t),
                           static_cast<size_t>(sqlite3_column_bytes(stmt_, col)))
             : std::string();
}

int64_t Stmt::integer(int col) const {
    return sqlite3_column_int64(stmt_, col);
}

bool Stmt::is_null(int col) const {
    return sqlite3_column_type(stmt_, col) == SQLITE_NULL;
}

Transaction::Transaction(Db& db) : db_(db) {
    db_.exec("BEGIN IMMEDIATE");
}

Transaction::~Transaction() {
    if (!done_) {
        try {
            db_.exec("ROLLBACK");
        } catch (...) {
        }
    }
}

void Transaction::commit() {
    db_.exec("COMMIT");
    done_ = true;
}

}  // namespace lamina::store
