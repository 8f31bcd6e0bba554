// Writes llama3.gguf (the Llama 3 vocabulary and merges of the npm package llama3-tokenizer-js,
// as a GGUF tokenizer with tokenizer.ggml.pre = llama-bpe) and llama3.json (texts and the ids
// that package gives) into the folder named by the first argument. See README.
const { llama3Tokenizer } = require('llama3-tokenizer-js/bundle/commonjs-llama3-tokenizer-with-baked-data.cjs');
const fs = require('fs');
const t = llama3Tokenizer;
const tokens = t.vocabById;
const merges = [...t.merges.entries()].sort((a, b) => a[1] - b[1]).map(e => e[0]);
const bufs = [];
const u32 = v => { const b = Buffer.alloc(4); b.writeUInt32LE(v); bufs.push(b); };
const u64 = v => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); bufs.push(b); };
const str = s => { const b = Buffer.from(s, 'utf8'); u64(b.length); bufs.push(b); };
bufs.push(Buffer.from('GGUF')); u32(3); u64(0); u64(7);
str('tokenizer.ggml.model'); u32(8); str('gpt2');
str('tokenizer.ggml.pre'); u32(8); str('llama-bpe');
str('tokenizer.ggml.tokens'); u32(9); u32(8); u64(tokens.length); tokens.forEach(str);
str('tokenizer.ggml.token_type'); u32(9); u32(5); u64(tokens.length); tokens.forEach((s, i) => u32(i >= 128000 ? 3 : 1));
str('tokenizer.ggml.merges'); u32(9); u32(8); u64(merges.length); merges.forEach(str);
str('tokenizer.ggml.bos_token_id'); u32(4); u32(128000);
str('tokenizer.ggml.eos_token_id'); u32(4); u32(128009);
fs.writeFileSync(process.argv[2] + '/llama3.gguf', Buffer.concat(bufs));
const texts = [
  "grabbed", " grabbed", "           grabbed", "\n", " \n", "\ttabs\t\t\t\tout here", "ax\n####\nboo", "镇", "🦙", "🦙Ꙋ", "Ꙋ🦙",
  "This is a test sentence.",
  "The llama (/ˈlɑːmə/; 🦙Spanish pronunciation: [ˈʎama]) (Lama glama) is a domesticated South American camelid, widely used as a meat and pack animal by Andean cultures since the Pre-Columbian era. 25 to 30% of their body weight for 8 to 13 km (5–8 miles).[3] (10,000–12,000 years ago)",
  "Hello, World! 12345 numbers\n\nand  two  spaces\ttab",
  "café naïve à la crème brûlée", "你好，世界", "emoji 🙂🚀 and 👨‍👩", " leading space and trailing ", "it's they're we'll I'd IT'S THEY'RE",
  "    indented code:\n\tif (x) {\n\t\treturn 1;\n\t}\n\n\n", "Numbers: 1 12 123 1234 12345 3.14159 1e10 0x1F",
  "Ελληνικά και русский текст, العربية, हिन्दी", "mixed\r\nline\rendings\n \n  \n",
];
const out = texts.map(s => ({ text: s, ids: t.encode(s, { bos: false, eos: false }) }));
out.push({ text: '<|start_header_id|>This text has special tokens<|eom_id|> in the middle of it.<|end_header_id|><|eot_id|>', ids: t.encode('<|start_header_id|>This text has special tokens<|eom_id|> in the middle of it.<|end_header_id|><|eot_id|>', {bos:false, eos:false}), special: true });
fs.writeFileSync(process.argv[2] + '/llama3.json', JSON.stringify(out));
console.log(tokens.length, merges.length);
