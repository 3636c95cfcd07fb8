// tokenizer.hpp — a byte-level BPE tokenizer read from a transformers
// `tokenizer.json` (GPT-2's scheme, which SmolLM2 and many Llama-architecture
// models use): special tokens split out first, optionally every digit on its
// own, GPT-2's pre-tokenizer split, bytes mapped to printable characters, then
// the BPE merges by rank.
//
// One simplification, on purpose: GPT-2's split classifies characters by
// Unicode category (\p{L}, \p{N}, \s); this one knows ASCII exactly and counts
// every non-ASCII character as a letter. On ASCII text it gives the tokens
// transformers gives (the test checks on the fixed evaluation text).
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "json.hpp"

class Tokenizer {
public:
    explicit Tokenizer(const json::Value& doc) {
        const json::Value& model = doc.at("model");
        if (model.at("type").string != "BPE")
            throw std::runtime_error("tokenizer.json: model type \"" + model.at("type").string +
                                     "\" (this engine reads byte-level BPE tokenizers only)");
        read_pre_tokenizer(doc.at("pre_tokenizer"));
        for (const auto& [token, id] : model.at("vocab").object) vocab_[token] = int32_t(id.number);
        const auto& merges = model.at("merges").array;
        for (size_t rank = 0; rank < merges.size(); ++rank) {
            const json::Value& m = merges[rank];
            // Two spellings: ["a", "b"] (tokenizers >= 0.20) or "a b".
            std::string key = m.kind == json::Value::Kind::Array ? m.array.at(0).string + " " + m.array.at(1).string
                                                                  : m.string;
            merge_rank_.emplace(std::move(key), int32_t(rank));
        }
        id_to_token_.resize(vocab_.size());
        for (const auto& [token, id] : vocab_) {
            if (id < 0 || size_t(id) >= id_to_token_.size())
                throw std::runtime_error("tokenizer.json: token ids are not 0..n-1");
            id_to_token_[id] = token;
        }
        if (const json::Value* added = doc.find("added_tokens"))
            for (const auto& t : added->array) special_.push_back(t.at("content").string);
        // Longest first, so that a special token that starts another is not split off early.
        std::sort(special_.begin(), special_.end(), [](auto& a, auto& b) { return a.size() > b.size(); });
        for (int b = 0, n = 0; b < 256; ++b) {
            bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
            byte_char_[b] = printable ? b : 256 + n++;
        }
        for (int b = 0; b < 256; ++b) char_byte_[byte_char_[b]] = uint8_t(b);
    }

    std::vector<int32_t> encode(const std::string& text) {
        std::vector<int32_t> ids;
        size_t i = 0, plain = 0;
        while (i <= text.size()) {
            const std::string* hit = nullptr;
            for (const auto& s : special_)
                if (!s.empty() && text.compare(i, s.size(), s) == 0) {
                    hit = &s;
                    break;
                }
            if (hit || i == text.size()) {
                encode_plain(text.substr(plain, i - plain), ids);
                if (!hit) break;
                ids.push_back(vocab_.at(*hit));
                i += hit->size();
                plain = i;
            } else {
                ++i;
            }
        }
        return ids;
    }

    std::string decode(const std::vector<int32_t>& ids) const {
        std::string out;
        for (int32_t id : ids) out += decode(id);
        return out;
    }
    /// One token's bytes (a token may hold part of a UTF-8 character).
    std::string decode(int32_t id) const {
        std::string out;
        const std::string& t = id_to_token_.at(size_t(id));
        for (size_t i = 0; i < t.size();) {
            uint32_t cp = next_code_point(t, i);
            auto b = char_byte_.find(cp);
            out += b != char_byte_.end() ? char(b->second) : '?';
        }
        return out;
    }
    size_t vocab_size() const { return id_to_token_.size(); }

private:
    void read_pre_tokenizer(const json::Value& p) {
        const std::string& type = p.at("type").string;
        if (type == "Sequence") {
            for (const auto& step : p.at("pretokenizers").array) read_pre_tokenizer(step);
        } else if (type == "Digits") {
            split_digits_ = true;
            const json::Value* individual = p.find("individual_digits");
            if (!individual || !individual->boolean)
                throw std::runtime_error("tokenizer.json: Digits without individual_digits is not supported");
        } else if (type == "ByteLevel") {
            const json::Value* prefix = p.find("add_prefix_space");
            if (prefix && prefix->boolean) throw std::runtime_error("tokenizer.json: add_prefix_space is not supported");
            byte_level_ = true;
        } else {
            throw std::runtime_error("tokenizer.json: pre-tokenizer \"" + type +
                                     "\" (this engine reads GPT-2-style byte-level tokenizers only)");
        }
    }

    static bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
    static bool is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
    static bool is_letter(unsigned char c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
    static bool is_letter_or_utf8(unsigned char c) { return is_letter(c) || c >= 0x80; }
    static bool is_other(unsigned char c) { return !is_space(c) && !is_letter_or_utf8(c) && !is_digit(c); }

    void encode_plain(const std::string& text, std::vector<int32_t>& ids) {
        if (!split_digits_) return split_gpt2(text, ids);
        size_t start = 0;
        for (size_t i = 0; i < text.size(); ++i)
            if (is_digit(text[i])) {
                split_gpt2(text.substr(start, i - start), ids);
                split_gpt2(text.substr(i, 1), ids);
                start = i + 1;
            }
        split_gpt2(text.substr(start), ids);
    }

    // GPT-2's 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
    void split_gpt2(const std::string& s, std::vector<int32_t>& ids) {
        const size_t n = s.size();
        auto run = [&](size_t j, bool (*in)(unsigned char)) {
            while (j < n && in(s[j])) ++j;
            return j;
        };
        for (size_t i = 0; i < n;) {
            size_t end = i;
            unsigned char c = s[i];
            unsigned char next = i + 1 < n ? s[i + 1] : 0;
            if (c == '\'' && (next == 's' || next == 't' || next == 'm' || next == 'd')) {
                end = i + 2;
            } else if (c == '\'' && i + 2 < n && (s.compare(i, 3, "'re") == 0 || s.compare(i, 3, "'ve") == 0 ||
                                                  s.compare(i, 3, "'ll") == 0)) {
                end = i + 3;
            } else {
                size_t j = (c == ' ' && i + 1 < n) ? i + 1 : i;  // the optional leading space
                unsigned char d = s[j];
                if (is_letter_or_utf8(d)) end = run(j, is_letter_or_utf8);
                else if (is_digit(d)) end = run(j, is_digit);
                else if (is_other(d)) end = run(j, is_other);
                else {  // whitespace: leave the last one for the next word, unless the text ends
                    size_t k = run(i, is_space);
                    end = (k < n && k - i >= 2) ? k - 1 : k;
                }
            }
            bpe(s.substr(i, end - i), ids);
            i = end;
        }
    }

    void bpe(const std::string& word, std::vector<int32_t>& ids) {
        if (word.empty()) return;
        auto cached = cache_.find(word);
        if (cached != cache_.end()) {
            ids.insert(ids.end(), cached->second.begin(), cached->second.end());
            return;
        }
        std::vector<std::string> parts;
        for (unsigned char b : word) {
            std::string ch;
            put_utf8(ch, byte_level_ ? byte_char_[b] : b);
            parts.push_back(ch);
        }
        while (parts.size() > 1) {
            int32_t best = INT32_MAX;
            size_t at = 0;
            for (size_t i = 0; i + 1 < parts.size(); ++i) {
                auto r = merge_rank_.find(parts[i] + " " + parts[i + 1]);
                if (r != merge_rank_.end() && r->second < best) best = r->second, at = i;
            }
            if (best == INT32_MAX) break;
            parts[at] += parts[at + 1];
            parts.erase(parts.begin() + long(at) + 1);
        }
        std::vector<int32_t> out;
        for (const auto& p : parts) {
            auto v = vocab_.find(p);
            if (v == vocab_.end()) throw std::runtime_error("tokenizer: \"" + p + "\" is not in the vocabulary");
            out.push_back(v->second);
        }
        ids.insert(ids.end(), out.begin(), out.end());
        cache_.emplace(word, std::move(out));
    }

    static void put_utf8(std::string& out, uint32_t cp) {
        if (cp < 0x80) out += char(cp);
        else out += char(0xC0 | cp >> 6), out += char(0x80 | (cp & 0x3F));  // the byte map stays below 0x800
    }
    static uint32_t next_code_point(const std::string& s, size_t& i) {
        unsigned char c = s[i++];
        if (c < 0x80) return c;
        int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : 1;
        uint32_t cp = c & (0x3F >> extra);
        for (int k = 0; k < extra && i < s.size(); ++k) cp = cp << 6 | (uint8_t(s[i++]) & 0x3F);
        return cp;
    }

    std::unordered_map<std::string, int32_t> vocab_;
    std::unordered_map<std::string, int32_t> merge_rank_;
    std::unordered_map<std::string, std::vector<int32_t>> cache_;
    std::vector<std::string> id_to_token_;
    std::vector<std::string> special_;
    uint32_t byte_char_[256];
    std::unordered_map<uint32_t, uint8_t> char_byte_;
    bool split_digits_ = false;
    bool byte_level_ = false;
};
