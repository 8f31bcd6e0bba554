// Writes llama2.gguf (the Llama 1/2 SentencePiece vocabulary of the npm package llama-tokenizer-js;
// scores are -(id - 259), the order of the original tokenizer.model) and llama2.json (texts and the
// ids that package gives) into the folder named by the first argument. See README.
import llamaTokenizer from 'llama-tokenizer-js';
import fs from 'fs';
const t = llamaTokenizer;
const tokens = t.vocabById;
const bufs = [];
const u32 = v => { const b = Buffer.alloc(4); b.writeUInt32LE(v); bufs.push(b); };
const f32 = v => { const b = Buffer.alloc(4); b.writeFloatLE(v); bufs.push(b); };
const u64 = v => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); bufs.push(b); };
const str = s => { const b = Buffer.from(s, 'utf8'); u64(b.length); bufs.push(b); };
bufs.push(Buffer.from('GGUF')); u32(3); u64(0); u64(7);
str('tokenizer.ggml.model'); u32(8); str('llama');
str('tokenizer.ggml.tokens'); u32(9); u32(8); u64(tokens.length); tokens.forEach(str);
str('tokenizer.ggml.scores'); u32(9); u32(6); u64(tokens.length); tokens.forEach((s, i) => f32(i == 259 ? -1e9 : i < 259 ? 0 : -(i - 259)));
str('tokenizer.ggml.token_type'); u32(9); u32(5); u64(tokens.length); tokens.forEach((s, i) => u32(i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1));
str('tokenizer.ggml.bos_token_id'); u32(4); u32(1);
str('tokenizer.ggml.eos_token_id'); u32(4); u32(2);
str('tokenizer.ggml.unknown_token_id'); u32(4); u32(0);
fs.writeFileSync(process.argv[2] + '/llama2.gguf', Buffer.concat(bufs));
const texts = [
  "grabbed", " grabbed", "           grabbed", "\n", " \n", "\ttabs\t\t\t\tout here", "ax\n####\nboo", "镇", "🦙", "🦙Ꙋ", "Ꙋ🦙",
  "This is a test sentence.", "Hello, World! 12345 numbers\n\nand  two  spaces\ttab",
  "café naïve à la crème brûlée", "你好，世界", "emoji 🙂🚀 and 👨‍👩", "it's they're we'll I'd IT'S THEY'RE",
  "    indented code:\n\tif (x) {\n\t\treturn 1;\n\t}\n\n\n", "Numbers: 1 12 123 1234 12345 3.14159 1e10 0x1F",
  "Ελληνικά και русский текст, العربية, हिन्दी",
  "The llama (/ˈlɑːmə/; 🦙Spanish pronunciation: [ˈʎama]) (Lama glama) is a domesticated South American camelid, widely used as a meat and pack animal by Andean cultures since the Pre-Columbian era.",
];
const out = texts.map(s => ({ text: s, ids: t.encode(s, false, true) }));
fs.writeFileSync(process.argv[2] + '/llama2.json', JSON.stringify(out));
console.log(tokens.length);
