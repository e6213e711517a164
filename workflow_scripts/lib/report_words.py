"""The words of the report (`snakemake --report`): its pages, categories and labels, in the
languages `eval.report_languages` names (Chinese and English by default).

English is the key; ZH holds each label's Chinese, a template where it has values. A label with no
Chinese is an error (KeyError), so the tests that build the pages in Chinese catch a label added in
English only. Names that are values rather than labels (a filter's reason, a corpus, a setting's
value such as `cloze`) go through `Words.name`, which keeps an unknown one as it is.

Written by hand, not with gettext: about a hundred short strings shown side by side in two
languages on one page, where gettext's one-language-per-process catalogs and compiled .mo files
would add a build step and no checking.
"""
LANGUAGE_NAMES = {"zh": "中文", "en": "English"}

ZH = {
    # pages and their sections
    "Run summary": "运行摘要",
    "Data": "数据",
    "Tokenizer": "分词器",
    "Evaluation": "评测",
    "Generation samples": "生成样例",
    "section": "部分",
    "measure": "指标",
    "value": "数值",
    "Funnel: documents and characters after each stage and filter": "漏斗：每个阶段和过滤器之后的文档数和字符数",
    "step": "步骤",
    "documents": "文档",
    "characters": "字符",
    "By corpus": "按语料",
    "weight": "权重",
    "read": "读入",
    "after clean": "清洗后",
    "after dedup": "去重后",
    "train documents (weighted)": "训练文档（加权）",
    "train characters (weighted)": "训练字符（加权）",
    "validation documents": "验证文档",
    "Deduplication": "去重",
    "Removed duplicates (first {count})": "被删除的重复文档（前 {count} 篇）",
    "removed": "删除的文档",
    "corpus": "语料",
    "kind": "类型",
    "duplicate of": "与之重复的文档",
    "its corpus": "其语料",
    "estimated Jaccard": "估计的 Jaccard 相似度",
    "Training": "训练",
    "Validation split": "验证集",
    "setting": "设置",
    "Bits per byte and perplexity on the validation split": "验证集上的每字节比特数和困惑度",
    "model": "模型",
    "bits per byte": "每字节比特数",
    "perplexity": "困惑度",
    "tokens": "词元",
    "bytes": "字节",
    "bytes / token": "字节 / 词元",
    "Multiple choice, overall": "选择题，总体",
    "set": "题集",
    "shots": "示例数",
    "scoring": "评分方式",
    "accuracy": "准确率",
    "questions": "题数",
    "chance": "随机水平",
    "prompts with fewer shots": "减少了示例的提示",
    "too long to score": "过长无法评分",
    "{model} on {set}, per subject": "{model} 在 {set} 上，按科目",
    "subject": "科目",
    "{shots}-shot {scoring}": "{shots} 示例 {scoring}",
    "Fact probe: the likeliest candidate object, per relation and phrasing (question: the answer to the relation's "
    "question)": "事实探针：按关系和表述，模型认为最可能的候选宾语（question：作为该关系问题的回答）",
    "relation": "关系",
    "phrasing": "表述",
    "facts": "事实数",
    "mean rank": "平均排名",
    "Fact probe: the first {count} questions answered by greedy generation (right: the fact's object named, no "
    "other candidate)": "事实探针：前 {count} 个问题的贪心生成回答（正确：说出了事实的宾语，且没有说出其他候选）",
    "question": "问题",
    "answer": "回答",
    "right": "正确",
    "yes": "是",
    "no": "否",
    "prompt": "提示",
    "Each prompt as a chat turn (greedy): does the model keep ChatML?":
        "每个提示作为一轮对话（贪心）：模型是否保持 ChatML 格式？",
    "answers ending with <|im_end|>": "以 <|im_end|> 结尾的回答",
    "answers leaking a role marker": "泄露角色标记的回答",
    "mean characters": "平均字符数",
    "no chat template": "没有对话模板",
    "{model}: {style} prompts, greedy decoding, at most {max_new_tokens} new tokens, repetition penalty {penalty}":
        "{model}：{style} 提示，贪心解码，最多生成 {max_new_tokens} 个词元，重复惩罚 {penalty}",
    # the summary's rows
    "{step}: documents / characters": "{step}：文档 / 字符",
    "{stage}: drop {reason}": "{stage}：丢弃 {reason}",
    "{stage}: {detail}": "{stage}：{detail}",
    "vocabulary": "词表",
    "characters / token (validation)": "字符 / 词元（验证集）",
    "bytes / token (validation)": "字节 / 词元（验证集）",
    "vocabulary expansion": "词表扩充",
    "tokens added to the base's": "在基座词表上新增的词元",
    "tokens / character (validation), base -> expanded": "词元 / 字符（验证集），基座 -> 扩充后",
    "parameters": "参数量",
    "pairs": "偏好对",
    "steps": "步数",
    "first loss": "初始损失",
    "final loss": "最终损失",
    "val loss": "验证损失",
    "val bpb": "验证集每字节比特数",
    "first margin": "初始间隔",
    "final margin": "最终间隔",
    "final reward accuracy": "最终奖励准确率",
    "first reward": "初始奖励",
    "final reward": "最终奖励",
    "final kl": "最终 KL",
    "tokens per s": "每秒词元数",
    "bits per byte (validation)": "每字节比特数（验证集）",
    "perplexity (validation)": "困惑度（验证集）",
    "{name} {shots}-shot {scoring} accuracy ({notes})": "{name} {shots} 示例 {scoring} 准确率（{notes}）",
    "{questions} questions": "{questions} 道题",
    "chance {chance}": "随机水平 {chance}",
    "{count} prompts cut to fewer shots to fit the model's context": "{count} 个提示为适应模型上下文减少了示例",
    "{count} too long to score": "{count} 道过长无法评分",
    ", ": "，",
    "; ": "；",
    "question: the right answer ranked first": "question：正确答案排第一",
    "fact probe, {what} ({facts} facts, chance {chance})": "事实探针，{what}（{facts} 个事实，随机水平 {chance}）",
    "fact probe, question: the right object named in a greedy answer ({facts} facts)":
        "事实探针，question：贪心生成的回答说出了正确宾语（{facts} 个事实）",
    "wall time": "耗时",
    "{stage} ({jobs} job)": "{stage}（{jobs} 个作业）",
    "{stage} ({jobs} jobs)": "{stage}（{jobs} 个作业）",
    "{seconds} s": "{seconds} 秒",
    # the summary's sections and the funnel's stages
    "data": "数据",
    "tokenizer": "分词器",
    "pretrain": "预训练",
    "sft": "SFT",
    "dpo": "DPO",
    "grpo": "GRPO",
    "continued pretraining": "继续预训练",
    # the report's categories and labels (rules/*.smk)
    "Scaling": "规模定律",
    "page": "页面",
    "stage": "阶段",
    "summary": "摘要",
    "funnel and dedup": "漏斗和去重",
    "figures": "数据",
    "bits per byte and accuracy": "每字节比特数和准确率",
    "samples": "样例",
    "funnel plot": "漏斗图",
    "pretraining": "预训练",
    "SFT": "SFT",
    "DPO": "DPO",
    "GRPO": "GRPO",
}

# Values that are names: translated where the report knows them, else shown as they are.
ZH_NAMES = {
    "dump pages": "转储页面", "extract": "抽取", "ingest": "读入", "convert": "繁简转换", "clean": "清洗",
    "dedup": "去重", "split": "划分", "train": "训练集", "validation": "验证集",
    "exact": "完全重复", "near": "近似重复",
    # the dedup stage's figures (corpus summary) and the tokenizer's report
    "documents in": "输入文档", "exact duplicates": "完全重复", "near duplicates": "近似重复",
    "documents out": "输出文档", "threshold": "阈值", "num perm": "MinHash 排列数", "lsh bands": "LSH 带数",
    "lsh rows": "LSH 每带行数", "band jobs": "分带作业数", "join jobs": "合并作业数",
    "vocab size": "词表大小", "pre tokenization": "预分词", "han run max": "汉字串最长长度",
    "training seconds": "训练秒数", "peak rss mb": "峰值内存（MB）", "characters per token": "每词元字符数",
    "bytes per token": "每词元字节数", "han single token share": "单个词元的汉字占比",
    "round trip exact": "编码解码后完全一致的比例",
}


class Words:
    """The report's words in one language: `say(template, **values)` for a label, `say.name(value)`
    for a name that the report may know."""

    def __init__(self, language):
        self.language = language

    def __call__(self, english, **values):
        return (english if self.language == "en" else ZH[english]).format(**values)

    def name(self, english):
        return english if self.language == "en" else ZH_NAMES.get(english, english)


def in_languages(english, languages):
    """One label in every language named, joined: "1. 运行摘要 / 1. Run summary"."""
    return " / ".join(dict.fromkeys(Words(language)(english) for language in languages))
