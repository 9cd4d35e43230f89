// A thin RAII layer over SQLite: a connection, prepared statements and transactions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

struct sqlite3;
struct sqlite3_stmt;

namespace lamina::store {

class Db;

class Stmt {
public:
    Stmt(Db& db, std::string_view sql);
    ~Stmt();
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;

    Stmt& bind(int idx, std::string_view v);
    Stmt& bind(int idx, int64_t v);
    Stmt& bind_null(int idx);
    // Binds values to the parameters in order: the first to 1, the next to 2, ...
    template <class... Values>
    Stmt& bind_all(const Values&... values) {
        int idx = 0;
        (bind(++idx, values), ...);
        return *this;
    }
    // True while a row is available; false when done.
    bool step();
    // Runs a statement that returns no rows.
    void run();
    std::string text(int col) const;
    int64_t integer(int col) const;
    bool is_null(int col) const;

private:
    Db& db_;
    sqlite3_stmt* stmt_ = nullptr;
};

class Db {
public:
    explicit Db(const std::string& path);
    ~Db();
    Db(const Db&) = delete;
    Db& operator=(const Db&) = delete;

    void exec(std::string_view sql);
    sqlite3* handle() { return db_; }
    [[noreturn]] void fail(const std::string& what);

private:
    sqlite3* db_ = nullptr;
    std::string path_;
};

// BEGIN IMMEDIATE on construction; ROLLBACK unless commit() was called.
class Transaction {
public:
    explicit Transaction(Db& db);
    ~Transaction();
    void commit();

private:
    Db& db_;
    bool done_ = false;
};

}  // namespace lamina::store
